#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the hand-made seed corpus, fuzz/corpus/<target>/seed-*, once: small
# operation streams that reach each operation of each target (the byte
# layout each target reads is described at its op_* functions). The files are
# committed; rerun only when a target's input format changes. Regression
# inputs (regress-*) found by fuzzing are kept beside them.
import os
import random
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def u8(v):
    return struct.pack("<B", v & 0xFF)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- fuzz_pool: limit u8, pool mode u8, seed u8, then ops ----

def pool_alloc(mode, *args, how=0):
    # pick_size: mode u8 then its argument(s); then how u8
    out = u8(0) + u8(mode)
    for kind, v in args:
        out += {"u8": u8, "u16": u16, "u32": u32}[kind](v)
    return out + u8(how)


def pool_ops():
    seqs = {}
    ops = b""
    ops += pool_alloc(0, ("u8", 10))
    ops += pool_alloc(1, ("u16", 3000))
    ops += pool_alloc(3, ("u32", 40000))
    ops += pool_alloc(4, ("u32", 70000))          # huge
    ops += pool_alloc(5, ("u8", 12), ("u8", 2))   # class boundary + 1
    ops += pool_alloc(6, ("u8", 3))               # oversize
    ops += pool_alloc(7, ("u16", 100), how=0x0B)  # alloc_ex ZERO, bounded
    ops += u8(6) + u8(1) + u8(0) + u32(5) + u32(100) + u8(1)   # slice
    ops += u8(6) + u8(2) + u8(1) + u32(7) + u32(0) + u8(0)     # read_slice
    ops += u8(6) + u8(3) + u8(2) + u32(0) + u32(0) + u8(0)     # duplicate
    ops += u8(7) + u8(1) + u32(3) + u32(50)                    # copy
    ops += u8(5) + u8(2)                                       # retain
    ops += u8(8) + u8(2) + u32(9)                              # skip
    ops += u8(3) + u8(0) + u8(4) + u8(1) + u8(9)               # releases, trim
    seqs["all-ops"] = u8(0) + u8(0) + u8(1) + ops
    seqs["checked-no-cache"] = u8(0) + u8(0x19) + u8(2) + ops
    seqs["zero-scrub-mmap"] = u8(0) + u8(0x4E) + u8(3) + ops
    faults = b""
    for n in range(1, 6):
        faults += u8(10) + u8(n)
        faults += pool_alloc(4, ("u32", 10000 * n))
        faults += pool_alloc(3, ("u32", 60000))
        faults += u8(3) + u8(n)
    seqs["backing-faults"] = u8(0) + u8(0x20) + u8(4) + faults
    seqs["memory-limit"] = u8(0x07) + u8(0) + u8(5) + faults + ops
    rng = random.Random(1)
    seqs["random"] = bytes(rng.randrange(256) for _ in range(600))
    return seqs


# ---- fuzz_buf: pool mode u8, seed u8, then op u8 + pick u8 + args ----

def buf_op(code, pick=0):
    return u8(code) + u8(pick)


def buf_ops():
    s = b""
    s += buf_op(0) + u8(0x00) + u16(100) + u16(0)                 # alloc
    s += buf_op(1) + u8(0x83) + u32(5000) + u16(200)              # alloc_ex bounded
    s += buf_op(2) + u16(300)                                     # wrap
    s += buf_op(3) + u16(100) + u16(5000)                         # map
    for w in range(4):
        for le in (0, 4):
            s += buf_op(10) + u8((w | le)) + u64(0x0102030405060708) + u32(0)   # write
            s += buf_op(11) + u8((w | le) | 8) + u64(0) + u32(0)                # read
            s += buf_op(12) + u8((w | le) | 16) + u64(0) + u32(3)               # get
            s += buf_op(10) + u8((w | le) | 24) + u64(0xdeadbeef) + u32(5)      # set
    s += buf_op(8) + u8(40) + bytes(range(40))                     # write bytes
    s += buf_op(9) + u8(255) + u16(9000)                           # long write: growth
    s += buf_op(13) + u8(0) + u32(0) + u16(20)                     # bulk read
    s += buf_op(13) + u8(1) + u32(4) + u16(20)                     # bulk get
    s += buf_op(13) + u8(2) + u32(8) + u16(20)                     # bulk set
    for k in range(5):
        s += buf_op(14) + u8(k) + u32(3) + u32(30)                 # cursors
    s += buf_op(15) + u8(0x10) + u16(3000)                         # reserve + commit
    s += buf_op(15) + u8(0x81) + u32(200000)                       # ensure_writable
    s += buf_op(16) + u32(0) + u32(1000) + u8(7) + u8(1)           # index_of
    s += buf_op(4) + u8(0) + u32(2) + u32(10)                      # slice
    s += buf_op(4, 1) + u8(1) + u32(5) + u32(0)                    # read_slice
    s += buf_op(4, 2) + u8(2) + u32(0) + u32(0)                    # duplicate
    s += buf_op(5) + u32(1) + u32(30)                              # copy
    s += buf_op(6) + buf_op(7) + buf_op(7, 3)                      # retain, releases
    s += buf_op(17) + u8(1)                                        # write_fd
    s += buf_op(17) + u8(0) + u16(2000) + u16(4000)                # read_fd
    seqs = {"all-ops": u8(0) + u8(1) + s,
            "checked-zero": u8(0x1A) + u8(2) + s,
            "no-cache-scrub": u8(0x05) + u8(3) + s}
    rng = random.Random(2)
    seqs["random"] = bytes(rng.randrange(256) for _ in range(800))
    return seqs


# ---- fuzz_composite: pool mode, seed, coalesce, then ops (k in bits 5-6) ----

def c_op(code, k=0):
    return u8(code | (k << 5))


def comp_ops():
    s = b""
    s += c_op(0) + u8(0) + u16(500) + u16(10)                      # pooled source
    s += c_op(0) + u8(0x80) + u32(9000) + u16(0)                   # bigger source
    s += c_op(0) + u8(3) + u16(300) + u16(5)                       # wrapped source
    s += c_op(0) + u8(2) + u16(20) + u16(100) + u8(0)              # view source
    for k in range(3):
        s += c_op(3, k) + u8(0) + u8(k) + u32(0) + u32(0)          # add (second ref)
        s += c_op(3, k) + u8(1) + u8(k + 1) + u32(0) + u32(0)      # prepend
        s += c_op(4, k) + u8(2) + u8(0) + u32(7) + u32(90)         # add_slice
        s += c_op(4, k) + u8(3) + u8(1) + u32(3) + u32(1)          # add_iov, 3 pieces
        s += u16(1) + u16(20) + u8(0) + u16(40) + u16(200) + u8(0) + u16(300) + u16(5) + u8(0)
        s += c_op(5, k) + u16(16) + bytes(range(16))               # add_copy
        s += c_op(5, k) + u16(9) + bytes(range(9))                 # packed behind it
        s += c_op(6, k) + u16(100) + u16(3000)                     # add_file
    s += c_op(11) + u8(3) + u32(0) + u8(12) + u32(400)             # find (needle from data)
    s += c_op(11) + u8(2) + u32(5) + u8(1) + u32(50)               # index_of
    s += c_op(12) + u8(8) + u32(100000)                            # iov
    s += c_op(7) + u8(2) + u32(700)                                # split 0 -> 1
    s += c_op(7, 2) + u8(1) + u32(0)                               # append 2 -> 0
    for how in range(5):
        s += c_op(8) + u8(how | 0x28) + u32(13) + u32(21)          # read/skip/get/typed
    s += c_op(10) + u8(3) + u32(100)                               # read_slice, kept
    s += c_op(10, 1) + u8(0) + u32(0)                              # flatten
    s += c_op(15) + u8(1)                                          # discard_read
    s += c_op(13) + u8(1) + u32(5000)                              # writev_max
    s += c_op(13) + u8(0) + u32(0)                                 # writev
    s += c_op(14, 1) + u16(2500) + u16(0)                          # read_fd
    s += c_op(13, 1) + u8(0) + u32(0)
    s += c_op(15) + u8(4 * 2) + c_op(5) + u16(500) + bytes(500)    # fault, then add_copy
    s += c_op(2) + u8(0) + c_op(2) + u8(1)                         # drop sources
    seqs = {"all-ops": u8(0) + u8(1) + u8(0) + s,
            "no-coalesce": u8(0x01) + u8(2) + u8(1) + s,
            "tiny-coalesce": u8(0x18) + u8(3) + u8(9) + s}
    rng = random.Random(3)
    seqs["random"] = bytes(rng.randrange(256) for _ in range(900))
    return seqs


# Hand-made reproducers of bugs the fuzzers found (the files they wrote are
# kept too, as regress-* without a generator).
def regress():
    out = {}
    # fuzz_buf: a pair whose last owner had views went back to the thread
    # cache still marked as viewed; reallocated and retained, it refused to
    # grow (-ENOBUFS). alloc, duplicate, release both, alloc again, retain,
    # write 5000 bytes.
    s = u8(0x00) + u8(1)
    s += buf_op(0) + u8(0x00) + u16(100) + u16(0)
    s += buf_op(4) + u8(2) + u32(0) + u32(0)
    s += buf_op(7, 1) + buf_op(7, 0)
    s += buf_op(0) + u8(0x00) + u16(100) + u16(0)
    s += buf_op(6) + buf_op(8) + u8(255) + u16(5000)
    out[("fuzz_buf", "recycled-pair-keeps-view-mark")] = s
    return out


def main():
    for name, data in pool_ops().items():
        write("fuzz_pool", name, data)
    for name, data in buf_ops().items():
        write("fuzz_buf", name, data)
    for name, data in comp_ops().items():
        write("fuzz_composite", name, data)
    for (target, name), data in regress().items():
        with open(os.path.join(ROOT, target, "regress-" + name), "wb") as f:
            f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
