//! Protobuf messages as proto3 JSON, the one way runrate writes them for HTTP clients:
//! the JSON API's answers and the webhooks' payloads, both as grpcurl prints them.

use prost_reflect::{DescriptorPool, DynamicMessage};

use super::{pb, to_proto};
use crate::{catalog::ReadSnapshot, domain::LoadId};

/// The API's descriptors with google.rpc's, whose Status and error details the errors
/// carry. Decoded by prost-reflect itself: prost's own descriptor types drop the
/// `google.api.http` option, an extension they do not know.
pub fn descriptor_pool() -> anyhow::Result<DescriptorPool> {
    let mut pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)?;
    pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
    Ok(pool)
}

/// A message of the type `full_name` names, as a dynamic message that serializes as
/// proto3 JSON.
pub fn dynamic<M: prost::Message>(
    pool: &DescriptorPool,
    full_name: &str,
    message: &M,
) -> anyhow::Result<DynamicMessage> {
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow::anyhow!("the protos do not define {full_name}"))?;
    Ok(DynamicMessage::decode(
        descriptor,
        message.encode_to_vec().as_slice(),
    )?)
}

/// A load of `snapshot` as the `runrate.v1.Load` resource, in JSON exactly as GetLoad
/// answers it.
pub fn load(
    pool: &DescriptorPool,
    snapshot: &ReadSnapshot,
    load: LoadId,
) -> anyhow::Result<serde_json::Value> {
    let record = snapshot
        .load_record(load)
        .ok_or_else(|| anyhow::anyhow!("load {load} is not in this snapshot"))?;
    let resource = to_proto::load(record, snapshot.load_changes(load));
    let message = dynamic(pool, "runrate.v1.Load", &resource)?;
    Ok(serde_json::to_value(&message)?)
}
