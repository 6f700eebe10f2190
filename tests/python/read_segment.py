"""Open a Wharf segment with pyarrow (the log is readable by others) and check what it holds.

Usage: read_segment.py SEGMENT_FILE STREAM EXPECTED_PAYLOAD...
Prints the table summary; exits non-zero if the schema, metadata or records differ.
"""
import sys

import pyarrow as pa
import pyarrow.ipc as ipc


def main() -> int:
    path, stream, *expected = sys.argv[1:]
    with pa.memory_map(path) as source:
        reader = ipc.open_file(source)
        table = reader.read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    assert meta["wharf.format"] == "segment", meta
    assert meta["wharf.version"] == "1", meta
    assert table.schema.field("stream").type == pa.string()
    assert table.schema.field("offset").type == pa.uint64()
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("payload").type == pa.binary()
    rows = [r for r in table.to_pylist() if r["stream"] == stream]
    payloads = [r["payload"].decode() for r in rows]
    assert payloads == expected, (payloads, expected)
    offsets = [r["offset"] for r in rows]
    assert offsets == sorted(offsets), offsets
    print(f"pyarrow {pa.__version__} read {table.num_rows} rows, seq {meta['wharf.seq']}: {payloads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
