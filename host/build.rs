//! Generates the client protocol types (and the `Play` gRPC client) from
//! `proto/client.proto`, and the node-to-node gRPC service from `proto/cluster.proto`.
//! protoc comes from the `protoc-bin-vendored` crate, so a machine needs nothing
//! installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/client.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut config = prost_build::Config::new();
    config
        // Game payloads are shared, not copied, between the players of a room.
        .bytes([".ludus.client.v1.RoomMessage.payload"])
        // The JSON text mode mirrors the Protobuf frames (see src/gateway/json.rs).
        .message_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .enum_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
        )
        .field_attribute(
            "RoomMessage.payload",
            "#[serde(with = \"crate::gateway::json::payload\")]",
        )
        // Error codes travel by name in JSON (`"rate_limited"`), as the README lists them.
        .field_attribute(
            "Error.code",
            "#[serde(with = \"crate::gateway::json::error_code\")]",
        )
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The `Play` service's client (the server side is hand-written in
    // src/gateway/play.rs: it passes frames through as bytes).
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &[proto], &["../proto"])?;

    let cluster = "../proto/cluster.proto";
    println!("cargo:rerun-if-changed={cluster}");
    tonic_prost_build::configure()
        .bytes(".ludus.cluster.v1")
        .compile_with_config(
            {
                let mut c = prost_build::Config::new();
                c.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
                c
            },
            &[cluster],
            &["../proto"],
        )?;
    Ok(())
}
