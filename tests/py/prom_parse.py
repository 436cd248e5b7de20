#!/usr/bin/env python3
"""Parses a Prometheus text exposition with the official client's parser, as a scraper
library would, and prints what it understood as one JSON document:

  {"families": [{"name", "type", "documentation", "unit",
                 "samples": [{"name", "labels": {...}, "value"}]}]}

Usage: prom_parse.py METRICS.txt
A file the parser rejects makes this script fail (non-zero exit, the parser's error on
stderr), which is the point: the test asserts it parses. Values that JSON cannot hold
(+Inf, NaN) are written as strings.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def value(v):
    if math.isinf(v) or math.isnan(v):
        return str(v)
    return v


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    families = []
    for fam in text_string_to_metric_families(text):
        families.append(
            {
                "name": fam.name,
                "type": fam.type,
                "documentation": fam.documentation,
                "unit": fam.unit,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": value(s.value)}
                    for s in fam.samples
                ],
            }
        )
    json.dump({"families": families}, sys.stdout)


if __name__ == "__main__":
    main()
