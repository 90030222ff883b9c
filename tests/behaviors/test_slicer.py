"""slicer: the data arrives in small slices, byte for byte."""

import os


def test_slices_are_small_and_bytes_intact(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:slicer",
        plugin_options={
            ("behavior", "slicer"): {
                "average_size": 100,
                "size_variation": 50,
                "delay": 0.01,
                "direction": "to_client",
            }
        },
    )
    payload = os.urandom(3000)
    with proxy.connect() as client:
        client.sendall(payload)
        reads = []
        while sum(map(len, reads)) < len(payload):
            chunk = client.recv(65536)
            assert chunk
            reads.append(chunk)
    assert b"".join(reads) == payload
    # 3000 bytes in slices of 50 to 150, 10 ms apart: many reads, none near the whole.
    assert len(reads) >= 10
    assert max(map(len, reads)) <= 1000
