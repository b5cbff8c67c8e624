//! Dotted field paths (`book.author.name`) resolved to field descriptors once, at load time.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// A chain of fields from a request message to a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub fields: Vec<FieldDescriptor>,
    /// As written in the rule, for messages.
    pub text: String,
}

impl FieldPath {
    /// Resolves `dotted` in `message`, accepting proto or JSON names at each step. Every step
    /// but the last must be a singular message field.
    pub fn resolve(message: &MessageDescriptor, dotted: &str) -> Result<FieldPath, String> {
        let mut fields = Vec::new();
        let mut current = message.clone();
        let parts: Vec<&str> = dotted.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let field = find_field(&current, part)
                .ok_or_else(|| format!("{} has no field {part:?}", current.full_name()))?;
            if i + 1 < parts.len() {
                current = singular_message(&field)?;
            }
            fields.push(field);
        }
        Ok(FieldPath {
            fields,
            text: dotted.to_string(),
        })
    }

    /// The last field of the path.
    pub fn leaf(&self) -> &FieldDescriptor {
        // A resolved path always has at least one field.
        &self.fields[self.fields.len() - 1]
    }

    /// The field numbers along the path, to compare paths cheaply.
    pub fn numbers(&self) -> Vec<u32> {
        self.fields.iter().map(FieldDescriptor::number).collect()
    }
}

/// A field by proto name, then by JSON name.
pub fn find_field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// The message type of a field that paths may pass through.
pub fn singular_message(field: &FieldDescriptor) -> Result<MessageDescriptor, String> {
    match field.kind() {
        Kind::Message(m) if !field.is_list() && !field.is_map() => Ok(m),
        _ => Err(format!(
            "{:?} is not a message: a path can only pass through singular message fields",
            field.name()
        )),
    }
}
