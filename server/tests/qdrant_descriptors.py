"""Compares Octet's `qdrant` proto with the one qdrant-client ships, field by field.

    python server/tests/qdrant_descriptors.py OCTET_DESCRIPTOR_SET.bin

The file is Octet's encoded FileDescriptorSet (octet_server::pb::FILE_DESCRIPTOR_SET,
written by the `qdrant_descriptors_match_qdrant_client` test). For every message in
package `qdrant`: the same name exists in qdrant-client; every field has the same
number, label, oneof and type, except message-typed fields Octet declares `bytes`
(opaque: same wire type; the server refuses them when present). For messages a
request can carry, every field qdrant-client defines must be declared too, so no
field a client sends is silently dropped. Enums: same values. Services: the same
methods with the same request and response types.
"""

import sys

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FieldDescriptor as FD
from qdrant_client.grpc import collections_service_pb2, points_service_pb2, qdrant_pb2  # noqa: F401

theirs = descriptor_pool.Default()
fds = descriptor_pb2.FileDescriptorSet()
with open(sys.argv[1], "rb") as f:
    fds.ParseFromString(f.read())
files = [f for f in fds.file if f.package == "qdrant"]
assert files, "no qdrant package in Octet's descriptor set"

ours = {}
enums = {}
services = []


def walk(prefix, msgs):
    for m in msgs:
        name = f"{prefix}.{m.name}"
        ours[name] = m
        for e in m.enum_type:
            enums[f"{name}.{e.name}"] = e
        walk(name, [n for n in m.nested_type if not n.options.map_entry])


for f in files:
    walk("qdrant", f.message_type)
    for e in f.enum_type:
        enums[f"qdrant.{e.name}"] = e
    services.extend(f.service)

errors = []
opaque = []
compared = 0
TYPE_MESSAGE, TYPE_BYTES, TYPE_ENUM = 11, 12, 14


def their_type_name(fd):
    if fd.message_type is not None:
        return "." + fd.message_type.full_name
    if fd.enum_type is not None:
        return "." + fd.enum_type.full_name
    return ""


def map_entry(m, field):
    nested = {n.name: n for n in m.nested_type}
    name = field.type_name.rsplit(".", 1)[-1]
    return nested.get(name)


for name, m in sorted(ours.items()):
    try:
        t = theirs.FindMessageTypeByName(name[len("") :])
    except KeyError:
        errors.append(f"{name}: not in qdrant-client")
        continue
    for f in m.field:
        compared += 1
        tf = t.fields_by_number.get(f.number)
        where = f"{name}.{f.name} = {f.number}"
        if tf is None:
            errors.append(f"{where}: no field with this number in qdrant-client")
            continue
        if tf.name != f.name:
            errors.append(f"{where}: qdrant-client calls it {tf.name}")
        ours_rep = f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        if ours_rep != tf.is_repeated:
            errors.append(f"{where}: repeated {ours_rep} vs {tf.is_repeated}")
        ours_opt = f.proto3_optional
        their_opt = tf.containing_oneof is not None and tf.containing_oneof.name.startswith("_")
        their_oneof = tf.containing_oneof.name if tf.containing_oneof and not their_opt else None
        our_oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") and not ours_opt else None
        if our_oneof != their_oneof:
            errors.append(f"{where}: oneof {our_oneof} vs {their_oneof}")
        if f.type == TYPE_BYTES and tf.type == TYPE_MESSAGE and not (tf.message_type.GetOptions().map_entry):
            opaque.append(f"{where} ({tf.message_type.full_name})")
            # An opaque singular field must keep presence, or an empty message would vanish.
            if not ours_rep and not ours_opt and our_oneof is None:
                errors.append(f"{where}: opaque singular field must be `optional bytes`")
            continue
        if f.type != tf.type:
            errors.append(f"{where}: type {f.type} vs {tf.type}")
            continue
        if f.type in (TYPE_MESSAGE, TYPE_ENUM):
            entry = map_entry(m, f)
            if entry is not None:
                tv = tf.message_type.fields_by_name["value"]
                ov = [x for x in entry.field if x.name == "value"][0]
                if ov.type != tv.type or (ov.type_name and ov.type_name != their_type_name(tv)):
                    errors.append(f"{where}: map value {ov.type_name} vs {their_type_name(tv)}")
            elif f.type_name != their_type_name(tf):
                errors.append(f"{where}: type {f.type_name} vs {their_type_name(tf)}")

# Messages a request can carry: every field qdrant-client defines must be declared.
requests = set()


def reach(type_name):
    name = type_name.lstrip(".")
    if name in requests or name not in ours:
        return
    requests.add(name)
    m = ours[name]
    for f in m.field:
        if f.type == TYPE_MESSAGE:
            entry = map_entry(m, f)
            if entry is not None:
                for x in entry.field:
                    if x.type == TYPE_MESSAGE:
                        reach(x.type_name)
            else:
                reach(f.type_name)


for s in services:
    for meth in s.method:
        reach(meth.input_type)
for name in sorted(requests):
    declared = {f.number for f in ours[name].field}
    for tf in theirs.FindMessageTypeByName(name).fields:
        if tf.number not in declared:
            errors.append(f"{name}.{tf.name} = {tf.number}: sent by qdrant-client, not declared by Octet")

for name, e in sorted(enums.items()):
    te = theirs.FindEnumTypeByName(name)
    ov = {v.name: v.number for v in e.value}
    tv = {v.name: v.number for v in te.values}
    if ov != tv:
        errors.append(f"enum {name}: {ov} vs {tv}")

methods = 0
for s in services:
    ts = theirs.FindServiceByName(f"qdrant.{s.name}")
    for meth in s.method:
        methods += 1
        tm = ts.methods_by_name.get(meth.name)
        if tm is None:
            errors.append(f"qdrant.{s.name}/{meth.name}: not in qdrant-client")
            continue
        if meth.input_type.lstrip(".") != tm.input_type.full_name or meth.output_type.lstrip(".") != tm.output_type.full_name:
            errors.append(f"qdrant.{s.name}/{meth.name}: types differ")

print(f"{len(ours)} messages, {compared} fields, {len(enums)} enums, {methods} methods compared; "
      f"{len(requests)} request messages fully declared; {len(opaque)} opaque fields")
for o in opaque:
    print("  opaque:", o)
if errors:
    print("MISMATCHES:")
    for e in errors:
        print("  " + e)
    sys.exit(1)
print("descriptors match")
