"""streams.ReadAhead: the bytes and errors of a stream read in a thread, in order, and a clean stop; the Channel
it hands them over with."""

from __future__ import annotations

import io
import threading
import time

import pytest

from layerkit.streams import CHUNK, Channel, ReadAhead, Reader


class _Chunks(Reader):
    """Hands out the given pieces one read at a time, then raises ``error`` (if any) instead of EOF."""

    def __init__(self, pieces: list[bytes], error: Exception | None = None) -> None:
        self.pieces = list(pieces)
        self.error = error
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.pieces:
            return self.pieces.pop(0)
        if self.error is not None:
            raise self.error
        return b""


def test_gives_back_every_byte_in_order_whatever_the_read_sizes() -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    ahead = ReadAhead(io.BytesIO(data), depth=2)
    got = bytearray()
    sizes = [1, 511, CHUNK, 3, -1, 7]
    while True:
        part = ahead.read(sizes[len(got) % len(sizes)])
        if not part:
            break
        got += part
    ahead.close()
    assert bytes(got) == data
    assert ahead.read(10) == b""  # EOF stays EOF


def test_an_error_arrives_after_the_bytes_read_before_it() -> None:
    ahead = ReadAhead(_Chunks([b"abc", b"def"], ValueError("digest mismatch")))
    assert ahead.read(-1) == b"abc"
    assert ahead.read(-1) == b"def"
    with pytest.raises(ValueError, match="digest mismatch"):
        ahead.read(-1)
    assert ahead.read(-1) == b""
    ahead.close()


def test_reads_at_most_depth_chunks_ahead() -> None:
    source = _Chunks([b"x"] * 50)
    ahead = ReadAhead(source, depth=3)
    time.sleep(0.2)
    assert source.reads <= 4  # depth chunks queued, plus at most the one being handed over
    ahead.close()


def test_close_stops_a_thread_waiting_for_room() -> None:
    ahead = ReadAhead(_Chunks([b"x"] * 50), depth=1)
    time.sleep(0.05)  # the thread has filled its one place and waits
    started = time.monotonic()
    ahead.close()
    assert time.monotonic() - started < 1
    assert not any(t.name == "layerkit-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_close_before_reading_anything_and_after_eof() -> None:
    ReadAhead(io.BytesIO(b"")).close()
    ahead = ReadAhead(io.BytesIO(b"data"))
    assert ahead.read() == b"data"
    assert ahead.read() == b""
    ahead.close()


def test_a_channel_hands_items_over_in_order_and_holds_at_most_depth() -> None:
    channel: Channel[int] = Channel(2)
    handed: list[int] = []

    def produce() -> None:
        for i in range(5):
            channel.put(i)
            handed.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.05)
    assert handed == [0, 1]  # the third put waits for room
    assert [channel.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    producer.join(timeout=1)
    assert not producer.is_alive()


def test_make_room_lets_a_waiting_put_through() -> None:
    channel: Channel[str] = Channel(1)
    channel.put("full")
    waiting = threading.Thread(target=channel.put, args=("one more",))
    waiting.start()
    time.sleep(0.05)
    assert waiting.is_alive()
    channel.make_room()
    waiting.join(timeout=1)
    assert not waiting.is_alive()
