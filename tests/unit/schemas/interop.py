#!/usr/bin/python3
"""Interop with Google's runtime, Python side (Debian's python3-flatbuffers,
code from `flatc --python`).

  interop.py --gen DIR write OUT [--mutate]   Python builds every case into OUT
  interop.py --gen DIR check IN               checks the C-built buffers in IN
  interop.py --gen DIR selftest               Python round trip + discrimination

DIR holds the flatc Python package (troupe/) and the generated interop_*.py.
--mutate writes each case with another variant's buffer of the same table, so
that a correct C checker must fail (the `must fail` ctest)."""
import os
import sys

SCHEMAS = ["journal", "command", "peer", "protocol", "state"]


def load(gen):
    sys.path.insert(0, gen)
    import flatbuffers  # noqa: F401  (Google's runtime must be importable)
    mods = []
    for s in SCHEMAS:
        mods.append(__import__("interop_" + s))
    return mods


def build(case, sized=False):
    import flatbuffers
    name, table, ident, bfn, kfn, force = case
    b = flatbuffers.Builder(1024)
    b.ForceDefaults(force)
    root = bfn(b)
    if sized:
        b.FinishSizePrefixed(root, file_identifier=ident)
    elif ident:
        b.Finish(root, file_identifier=ident)
    else:
        b.Finish(root)
    return bytes(b.Output())


def forms(case):
    """(file suffix, size-prefixed) of each buffer a case travels as."""
    return [("", False), (".sized", True)] if case[2] else [("", False)]


def check(case, buf, sized=False):
    F = []
    try:
        case[4](buf, F, 4 if sized else 0)
    except Exception as e:  # a broken buffer may raise inside the runtime
        F.append("exception: %r" % (e,))
    return F


def all_cases(mods):
    for m in mods:
        for c in m.CASES:
            yield c


def cmd_write(mods, out, mutate):
    cases = list(all_cases(mods))
    by_table = {}
    for c in cases:
        by_table.setdefault((c[0].split(".")[0], c[1]), []).append(c)
    n = 0
    for c in cases:
        src = c
        if mutate:
            group = by_table[(c[0].split(".")[0], c[1])]
            src = group[(group.index(c) + 1) % len(group)]
        for sfx, sized in forms(c):
            with open(os.path.join(out, c[0] + sfx + ".bin"), "wb") as f:
                f.write(build(src, sized))
            n += 1
    print("interop.py: wrote %d Python buffers to %s%s" %
          (n, out, " (mutated)" if mutate else ""))
    return 0


def cmd_check(mods, d):
    n = fails = 0
    for c in all_cases(mods):
        for sfx, sized in forms(c):
            n += 1
            path = os.path.join(d, c[0] + sfx + ".bin")
            try:
                with open(path, "rb") as f:
                    buf = f.read()
            except OSError as e:
                print("FAIL %s: %s" % (c[0], e), file=sys.stderr)
                fails += 1
                continue
            F = check(c, buf, sized)
            if F:
                fails += 1
                print("FAIL %s%s (C-built, read by Python)" % (c[0], sfx),
                      file=sys.stderr)
                for x in F[:20]:
                    print("    mismatch: " + x, file=sys.stderr)
    print("interop.py: Python checked %d C buffers, %d failed" % (n, fails))
    return 1 if fails else 0


def cmd_selftest(mods):
    n = fails = disc = 0
    for m in mods:
        variants = {}
        for c in m.CASES:
            variants.setdefault(c[1], {})[c[0].rsplit(".", 1)[1]] = c
        for c in m.CASES:
            n += 1
            F = check(c, build(c)) + (check(c, build(c, True), True)
                                      if c[2] else [])
            if F:
                fails += 1
                print("FAIL %s (Python round trip): %s" % (c[0], F[:5]),
                      file=sys.stderr)
        for table, v in variants.items():
            full, absent = build(v["full"]), build(v["absent"])
            if full == absent:
                continue  # a table without fields
            if check(v["absent"], full) and check(v["full"], absent):
                disc += 1
            else:
                fails += 1
                print("FAIL %s: checks do not tell variants apart" % table,
                      file=sys.stderr)
    print("interop.py: selftest %d cases round-tripped, %d tables "
          "discriminated, %d failures" % (n, disc, fails))
    return 1 if fails else 0


def main(argv):
    if len(argv) < 4 or argv[1] != "--gen":
        print(__doc__, file=sys.stderr)
        return 2
    mods = load(argv[2])
    cmd = argv[3]
    if cmd == "write" and len(argv) >= 5:
        return cmd_write(mods, argv[4], "--mutate" in argv[5:])
    if cmd == "check" and len(argv) == 5:
        return cmd_check(mods, argv[4])
    if cmd == "selftest":
        return cmd_selftest(mods)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
