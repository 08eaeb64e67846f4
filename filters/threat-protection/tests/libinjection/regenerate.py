#!/usr/bin/env python3
"""Rewrites the --EXPECTED-- section of each test file with what the C
library's own test driver prints for its input (the GOT section of
`testdriver`), and writes data/expected.tsv: for each line of the sample
files, the SQL injection fingerprint (empty: none) and the XSS verdict of
the C library (`fp`, a 20-line driver: see README.md).

Usage: regenerate.py TESTDRIVER FP
"""
import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).parent
testdriver, fp = sys.argv[1], sys.argv[2]

for path in sorted((here / "tests").glob("test-*.txt")):
    if not path.name.startswith(("test-sqli-", "test-tokens-", "test-folding-")):
        continue
    out = subprocess.run([testdriver, path], capture_output=True).stdout
    if b"GOT: \n" not in out:
        continue  # the driver agrees with the file: it prints nothing more
    got = out.split(b"GOT: \n", 1)[1].rsplit(b"\n==\n", 1)[0]
    text = path.read_bytes()
    head = text.split(b"--EXPECTED--\n", 1)[0]
    path.write_bytes(head + b"--EXPECTED--\n" + got + (b"\n" if got else b""))

lines = []
for path in sorted((here / "data").glob("*.txt")):
    for line in path.read_bytes().split(b"\n"):
        if line and not line.startswith(b"#") and line.strip():
            lines.append(line)
out = subprocess.run([fp], input=b"\n".join(lines) + b"\n", capture_output=True).stdout
(here / "data" / "expected.tsv").write_bytes(out)
