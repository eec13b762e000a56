"""The daemon's batch merging: ring blocks cut into batches are merged without copying a
shared buffer more than once."""
from __future__ import annotations

from atlas.agent.capture import FrameBatch
from atlas.agent.daemon import merge_batches


def test_merging_batches_that_share_a_buffer_copies_it_once():
    # As the live ring hands them over: one block's buffer, cut into batches by frame count.
    whole = FrameBatch.from_frames([b"abc", b"de", b"fgh", b"ij"], [1.0, 2.0, 3.0, 4.0], 1)
    cut = [FrameBatch(whole.buf, whole.offsets[i:i + 2], whole.caplens[i:i + 2], whole.wirelens[i:i + 2], whole.ts[i:i + 2], 1)
           for i in (0, 2)]
    other = FrameBatch.from_frames([b"xyz1"], [5.0], 1)
    m = merge_batches(cut + [other])
    assert [m.frame(i) for i in range(len(m))] == [b"abc", b"de", b"fgh", b"ij", b"xyz1"]
    assert list(m.ts) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(m.buf) == len(whole.buf) + len(other.buf)  # FrameBatch.concat: 2 * len(whole.buf) + ...
    assert merge_batches(cut).buf is whole.buf


def test_heap_trimmer_runs_at_most_once_per_interval():
    import platform

    from atlas.agent.daemon import HeapTrimmer

    t = HeapTrimmer(3600.0)
    if platform.libc_ver()[0] == "glibc":
        assert t._trim is not None
    assert t.maybe() is False  # the interval has not passed
    t._last -= 3601.0
    assert t.maybe() is (t._trim is not None) and t.maybe() is False
