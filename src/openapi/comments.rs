//! Proto comments as descriptions, read from the descriptors' source info when they carry it
//! (`--proto` always does; prebuilt sets do when built with `protoc --include_source_info`,
//! `buf build`, or `protogate compile --include-source-info`).

use std::collections::HashMap;

use prost_reflect::{
    DescriptorPool, EnumDescriptor, EnumValueDescriptor, FieldDescriptor, FileDescriptor,
    MessageDescriptor, MethodDescriptor, OneofDescriptor, ServiceDescriptor,
};

/// Every commented element of every file, by file name and source path.
#[derive(Debug, Default)]
pub(super) struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    pub(super) fn new(pool: &DescriptorPool) -> Comments {
        let mut by_file = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            let mut by_path = HashMap::new();
            for location in &info.location {
                let text = [&location.leading_comments, &location.trailing_comments]
                    .into_iter()
                    .find_map(|c| c.as_deref().and_then(clean));
                if let Some(text) = text {
                    by_path.insert(location.path.clone(), text);
                }
            }
            if !by_path.is_empty() {
                by_file.insert(file.name().to_string(), by_path);
            }
        }
        Comments { by_file }
    }

    fn of(&self, file: &FileDescriptor, path: &[i32]) -> Option<&str> {
        self.by_file.get(file.name())?.get(path).map(String::as_str)
    }

    pub(super) fn message(&self, m: &MessageDescriptor) -> Option<&str> {
        self.of(&m.parent_file(), m.path())
    }

    pub(super) fn field(&self, f: &FieldDescriptor) -> Option<&str> {
        self.of(&f.parent_file(), f.path())
    }

    pub(super) fn oneof(&self, o: &OneofDescriptor) -> Option<&str> {
        self.of(&o.parent_file(), o.path())
    }

    pub(super) fn enumeration(&self, e: &EnumDescriptor) -> Option<&str> {
        self.of(&e.parent_file(), e.path())
    }

    pub(super) fn enum_value(&self, v: &EnumValueDescriptor) -> Option<&str> {
        self.of(&v.parent_file(), v.path())
    }

    pub(super) fn service(&self, s: &ServiceDescriptor) -> Option<&str> {
        self.of(&s.parent_file(), s.path())
    }

    pub(super) fn method(&self, m: &MethodDescriptor) -> Option<&str> {
        self.of(&m.parent_file(), m.path())
    }
}

/// A comment as text: the one space protoc keeps after `//` removed from every line, trailing
/// blanks and empty first and last lines dropped; `None` when nothing is left.
fn clean(raw: &str) -> Option<String> {
    let lines: Vec<&str> = raw.lines().map(str::trim_end).collect();
    let spaced = lines
        .iter()
        .filter(|l| !l.is_empty())
        .all(|l| l.starts_with(' '));
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| match spaced {
            true => l.strip_prefix(' ').unwrap_or(l),
            false => l,
        })
        .collect();
    let text = lines.join("\n");
    let text = text.trim_matches('\n');
    (!text.trim().is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn comments_lose_the_space_after_the_slashes_and_blank_edges() {
        assert_eq!(
            clean(" Gets a book.\n\n Second paragraph.\n").as_deref(),
            Some("Gets a book.\n\nSecond paragraph.")
        );
        assert_eq!(clean("\n   \n"), None);
        assert_eq!(clean("x\n  y").as_deref(), Some("x\n  y"));
    }
}
