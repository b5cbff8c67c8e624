//! Loading descriptors: prebuilt `FileDescriptorSet`s and `.proto` files compiled in-process,
//! on top of the `google/api` and `google/rpc` files built into the binary.

mod embedded;

use std::path::{Path, PathBuf};

use prost::Message;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};

pub use embedded::EMBEDDED_FILES;

/// Where descriptors come from; every list may be empty.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Binary `FileDescriptorSet` files, as `protoc --include_imports` or `buf build` write them.
    pub descriptor_sets: Vec<PathBuf>,
    /// `.proto` files compiled in-process.
    pub protos: Vec<PathBuf>,
    /// Import roots for `protos`.
    pub includes: Vec<PathBuf>,
    /// Binary sets already in memory (the built-in VPS demo), named for messages.
    pub embedded_sets: Vec<(&'static str, &'static [u8])>,
    /// Also take descriptors from every upstream's gRPC server reflection; they are fetched
    /// (by `reflection_source`) into `fetched_sets` before each build.
    pub from_reflection: bool,
    /// Sets fetched at run time, named for messages; loaded last, so a file of the same name
    /// from any other source wins.
    pub fetched_sets: Vec<(String, bytes::Bytes)>,
}

/// Why descriptors could not be loaded; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot read descriptor set {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("descriptor set {path}: {message}{hint}")]
    BadSet {
        path: PathBuf,
        message: String,
        hint: &'static str,
    },
    #[error("cannot compile .proto files: {0}")]
    Compile(String),
    #[error("the built-in google/api and google/rpc files do not load: {0}")]
    Embedded(String),
}

const IMPORTS_HINT: &str =
    " (was it built without its imports? use `protoc --include_imports` or `buf build`)";

/// Builds one pool: the built-in files first, then every set, then the compiled protos.
/// A file already in the pool is skipped by name, so sets carrying their own (perhaps older)
/// copies of `google/api/*.proto` load all the same.
pub fn load(sources: &Sources) -> Result<DescriptorPool, DescriptorError> {
    let mut pool = embedded::pool()?;
    for (name, bytes) in &sources.embedded_sets {
        add_set(&mut pool, Path::new(name), bytes)?;
    }
    for path in &sources.descriptor_sets {
        let bytes = std::fs::read(path).map_err(|source| DescriptorError::Read {
            path: path.clone(),
            source,
        })?;
        add_set(&mut pool, path, &bytes)?;
    }
    if !sources.protos.is_empty() {
        let set = compile(&sources.includes, &sources.protos, true)?;
        pool.decode_file_descriptor_set(set.as_slice())
            .map_err(|e| DescriptorError::Compile(e.to_string()))?;
    }
    for (name, bytes) in &sources.fetched_sets {
        add_set(&mut pool, Path::new(name), bytes)?;
    }
    Ok(pool)
}

fn add_set(pool: &mut DescriptorPool, path: &Path, bytes: &[u8]) -> Result<(), DescriptorError> {
    // Checked with prost-types first only for the message; the pool decodes the bytes itself
    // because prost-types would drop extension options such as `google.api.http`.
    prost_types::FileDescriptorSet::decode(bytes).map_err(|e| DescriptorError::BadSet {
        path: path.to_owned(),
        message: format!("not a FileDescriptorSet: {e}"),
        hint: "",
    })?;
    pool.decode_file_descriptor_set(bytes).map_err(|e| {
        let message = e.to_string();
        let hint = if message.contains("has not been added") || message.contains("not found") {
            IMPORTS_HINT
        } else {
            ""
        };
        DescriptorError::BadSet {
            path: path.to_owned(),
            message,
            hint,
        }
    })
}

/// Compiles `.proto` files with protox into an encoded set that includes every import, the
/// built-in `google/api` and `google/rpc` files among them when the sources import those.
/// Encoded by protox itself, which keeps extension options (prost-types would drop them).
pub fn compile(
    includes: &[PathBuf],
    files: &[PathBuf],
    source_info: bool,
) -> Result<Vec<u8>, DescriptorError> {
    let mut chain = ChainFileResolver::new();
    for include in includes {
        chain.add(IncludeFileResolver::new(include.clone()));
    }
    chain.add(embedded::Resolver);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler
        .include_imports(true)
        .include_source_info(source_info);
    for file in files {
        compiler
            .open_file(file)
            .map_err(|e| DescriptorError::Compile(format!("{e:?}").replace('\n', " ")))?;
    }
    Ok(compiler.encode_file_descriptor_set())
}

/// `NO_SIDE_EFFECTS` in `google.protobuf.MethodOptions.IdempotencyLevel`.
const NO_SIDE_EFFECTS: i32 = 1;

/// Whether the method is marked `idempotency_level = NO_SIDE_EFFECTS` (a Connect `GET` may
/// call it).
pub(crate) fn is_side_effect_free(method: &prost_reflect::MethodDescriptor) -> bool {
    let options = method.options();
    let level = options.get_field_by_name("idempotency_level");
    level.and_then(|v| v.as_enum_number()) == Some(NO_SIDE_EFFECTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pool_knows_http_rules_and_rpc_details() {
        let pool = load(&Sources::default()).unwrap();
        assert!(pool.get_extension_by_name("google.api.http").is_some());
        assert!(pool.get_message_by_name("google.api.HttpBody").is_some());
        assert!(pool.get_message_by_name("google.rpc.BadRequest").is_some());
        assert!(pool.get_message_by_name("google.rpc.Status").is_some());
    }

    #[test]
    fn a_set_without_its_imports_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.proto"),
            "syntax = \"proto3\"; package a; import \"b.proto\"; message A { b.B b = 1; }",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.proto"),
            "syntax = \"proto3\"; package b; message B {}",
        )
        .unwrap();
        let bytes = compile(&[dir.path().into()], &["a.proto".into()], false).unwrap();
        let mut set = prost_types::FileDescriptorSet::decode(bytes.as_slice()).unwrap();
        set.file.retain(|f| f.name() == "a.proto");
        let path = dir.path().join("a.binpb");
        std::fs::write(&path, set.encode_to_vec()).unwrap();
        let err = load(&Sources {
            descriptor_sets: vec![path],
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("a.binpb"), "{err}");
        assert!(err.contains("--include_imports"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.binpb");
        std::fs::write(&path, b"\xff\xff\xff").unwrap();
        let err = load(&Sources {
            descriptor_sets: vec![path],
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.binpb") && err.contains("not a FileDescriptorSet"),
            "{err}"
        );
    }
}
