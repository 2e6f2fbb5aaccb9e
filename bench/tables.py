#!/usr/bin/env python3
"""Prints bench/proxy.sh's results as Markdown: every run, then the medians over the rounds.

usage: tables.py plain|tls RESULTS LABEL...

RESULTS has one line per (round, target): `round|target index|value value ...`; target 0 is
nginx, the baseline of every ratio. Ratios are medians of the per-round ratios.
"""
import statistics
import sys

# Per kind: the columns of a line (name, unit, whether a ratio to nginx follows), and which of
# them the medians table shows.
COLUMNS = {
    "plain": (
        [("req/s", "", True), ("p99", " ms", False), ("fixed p50", " ms", False),
         ("fixed p99", " ms", True), ("close req/s", "", True)],
        [0, 3, 4],
    ),
    "tls": ([("HTTPS req/s", "", True), ("h2 req/s", "", True)], [0, 1]),
}


def number(value, unit):
    return f"{value:.3f}{unit}" if unit else f"{value:,.0f}"


def table(head, rows, text_columns):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * text_columns + "---:|" * (len(head) - text_columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main():
    kind, path, *labels = sys.argv[1:]
    columns, summary = COLUMNS[kind]
    runs = {}
    for line in open(path):
        if line.strip():
            rnd, i, values = line.strip().split("|")
            runs.setdefault(int(i), []).append((int(rnd), [float(v) for v in values.split()]))
    nginx = {rnd: v for rnd, v in runs[0]}

    def cells(k, value, ratio):
        name, unit, with_ratio = columns[k]
        return [number(value, unit)] + ([f"{ratio:.2f}"] if with_ratio else [])

    def head(ks):
        out = []
        for k in ks:
            name, _, with_ratio = columns[k]
            out += [name] + (["× nginx" if "req/s" in name else "÷ nginx's"] if with_ratio else [])
        return out

    every = range(len(columns))
    table(["round", "target"] + head(every),
          [[str(rnd), label] + sum((cells(k, v[k], v[k] / nginx[rnd][k]) for k in every), [])
           for i, label in enumerate(labels) for rnd, v in runs[i]], 2)
    print()
    print("Medians over the rounds (ratios are medians of the per-round ratios):")
    print()
    med = statistics.median
    table(["target"] + head(summary),
          [[label] + sum((cells(k, med(v[k] for _, v in runs[i]),
                                med(v[k] / nginx[r][k] for r, v in runs[i])) for k in summary), [])
           for i, label in enumerate(labels)], 1)


if __name__ == "__main__":
    main()
