//! Compiles every `.proto` under the workspace's `proto/` folder with `protox` (pure Rust, so a
//! fresh machine needs no system `protoc`) and generates prost messages plus tonic clients and
//! servers with `tonic-prost-build`.
//!
//! For the etcd packages it also runs `pbjson-build` on the same descriptors, so the HTTP/JSON
//! gateway's proto3 JSON mapping is generated from the `.proto` files rather than written by
//! hand. The options are the ones etcd's grpc-gateway uses: field names as written in the
//! `.proto` (`OrigName`, so `range_end` and `ID`), and unknown fields ignored on input. The
//! impls are appended to prost's file for each package, because they name the messages by
//! their package-relative paths and so must live in the same module.
//!
//! The encoded descriptor set is written next to the generated code so the library can expose
//! it (gRPC reflection) without compiling the files twice.

use std::error::Error;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", proto_root.display());
    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    // A stable order keeps the generated code and the descriptor set reproducible.
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_source_info(true).include_imports(true);
    for file in &files {
        let relative = file.strip_prefix(&proto_root)?;
        compiler.open_file(relative)?;
    }
    let descriptors = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("flotilla_descriptor.bin"), &descriptors)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("_includes.rs")
        .compile_fds(compiler.file_descriptor_set())?;

    let json_impls = pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        // Appending cannot pile up across reruns: prost rewrites a package's file whenever its
        // contents differ from what it generates, and the appended impls always make them differ.
        .generate(
            &[
                ".etcdserverpb",
                ".mvccpb",
                ".authpb",
                ".v3lockpb",
                ".v3electionpb",
            ],
            |package| {
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(out_dir.join(format!("{package}.rs")))?;
                Ok(BufWriter::new(file))
            },
        )?;
    for (_, mut file) in json_impls {
        file.flush()?;
    }
    Ok(())
}

/// Every `.proto` file below `dir`, recursively.
fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
