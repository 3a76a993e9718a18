#!/usr/bin/python3
"""The chaos suite in its short form (bench/chaos.py --short): every case
on servers of its own, one fault each; its TAP is this test's output."""
import os
import sys

CHAOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "chaos.py")
os.execv("/usr/bin/python3", ["/usr/bin/python3", CHAOS, "--short", *sys.argv[1:]])
