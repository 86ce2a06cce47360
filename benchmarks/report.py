"""Medians, ratios, the table, the target check and the plot."""

from __future__ import annotations

import statistics
from typing import Optional

from benchmarks.cases import BY_NAME, NAMES, reference

MiB = 1 << 20
GiB = 1 << 30


def summarize(records: list[dict]) -> list[dict]:
    """One row per (case, size, pattern), in case order."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["case"], rec["size"], rec["pattern"]), []).append(rec)
    rows = []
    for (case, size, pattern), recs in groups.items():
        ok = [r for r in recs if r.get("ok")]
        row: dict = {
            "case": case,
            "size": size,
            "pattern": pattern,
            "runs": len(recs),
            "ok": len(ok),
        }
        if len(ok) < len(recs):
            row["error"] = next(r.get("error") for r in recs if not r.get("ok"))
        if ok:
            rates = [r["mib_s"] for r in ok]
            row.update(
                {
                    "median_mib_s": statistics.median(rates),
                    "min_mib_s": min(rates),
                    "max_mib_s": max(rates),
                    "median_s": statistics.median(r["seconds"] for r in ok),
                    "cpu_s_per_gib": statistics.median(r["cpu_s_per_gib"] for r in ok),
                    "rss_mib": max(r["rss_mib"] for r in ok),
                }
            )
            if any("allocated" in r for r in ok):
                row["allocated"] = max((r.get("allocated") or 0) for r in ok)
                row["expected_allocation"] = ok[0].get("expected_allocation")
        rows.append(row)
    by_key = {(r["case"], r["size"], r["pattern"]): r for r in rows}
    for row in rows:
        case = BY_NAME[row["case"]]
        for against in ("dog", "old"):
            ref = reference(case, against)
            base = by_key.get((ref, row["size"], row["pattern"])) if ref else None
            if base and base.get("median_mib_s") and row.get("median_mib_s"):
                row[f"ratio_{against}"] = row["median_mib_s"] / base["median_mib_s"]
    order = {n: i for i, n in enumerate(NAMES)}
    rows.sort(key=lambda r: (r["size"], r["pattern"], order[r["case"]]))
    return rows


def _size(n: int) -> str:
    return f"{n >> 30}G" if n >= GiB and n % GiB == 0 else f"{n >> 20}M"


def table(rows: list[dict], skipped: dict[str, str]) -> str:
    head = (
        f"{'case':<18} {'size':>5} {'pattern':<7} {'MiB/s':>8} {'min-max':>15} "
        f"{'x dog':>6} {'x old':>6} {'CPU s/GiB':>9} {'RSS MiB':>8}"
    )
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        key = (r["size"], r["pattern"])
        if last is not None and key != last:
            lines.append("")
        last = key
        if not r["ok"]:
            lines.append(
                f"{r['case']:<18} {_size(r['size']):>5} {r['pattern']:<7} FAILED: {r.get('error')}"
            )
            continue
        spread = f"{r['min_mib_s']:.0f}-{r['max_mib_s']:.0f}"
        dog = f"{r['ratio_dog']:.2f}" if "ratio_dog" in r else "-"
        old = f"{r['ratio_old']:.2f}" if "ratio_old" in r else "-"
        note = f"  ({r['runs'] - r['ok']} failed: {r['error']})" if r["ok"] < r["runs"] else ""
        lines.append(
            f"{r['case']:<18} {_size(r['size']):>5} {r['pattern']:<7} "
            f"{r['median_mib_s']:8.1f} {spread:>15} {dog:>6} {old:>6} "
            f"{r['cpu_s_per_gib']:9.2f} {r['rss_mib']:8.0f}{note}"
        )
    for name, why in skipped.items():
        lines.append(f"{name:<18} skipped: {why}")
    return "\n".join(lines)


# ------------------------------------------------------------------ targets


def _pick_size(rows: list[dict], want: int) -> Optional[int]:
    sizes = sorted({r["size"] for r in rows})
    if not sizes:
        return None
    return want if want in sizes else sizes[-1]


def _row(rows, case, size, pattern="dense") -> Optional[dict]:
    for r in rows:
        if (r["case"], r["size"], r["pattern"]) == (case, size, pattern) and r["ok"]:
            return r
    return None


def _at(size: int, want: int) -> str:
    return "" if size == want else f" [measured at {_size(size)}, target is for {_size(want)}]"


def targets(rows: list[dict], cluster_kind: str) -> list[dict]:
    """Each target of the issue: met / not met / not measured, with figures."""
    out: list[dict] = []
    size = _pick_size(rows, GiB)
    big = _pick_size(rows, 4 * GiB)

    def add(name: str, met: Optional[bool], detail: str) -> None:
        out.append({"target": name, "met": met, "detail": detail})

    if size is None or big is None:
        return out

    def ratio(name, case, ref, need):
        a, b = _row(rows, case, size), _row(rows, ref, size)
        if not a or not b:
            add(name, None, f"not measured ({case if not a else ref} missing)")
            return
        x = a["median_mib_s"] / b["median_mib_s"]
        add(
            name,
            x >= need,
            f"{a['median_mib_s']:.0f} vs {b['median_mib_s']:.0f} MiB/s = "
            f"{x:.2f}x (need >= {need}x){_at(size, GiB)}",
        )

    ratio("raw write >= 2.0x dog vdi write", "raw-write", "dog-write", 2.0)
    ratio("raw read >= 1.2x dog vdi read", "raw-read", "dog-read", 1.2)
    ratio("Store.add >= 2.5x old driver", "store-add", "old-add", 2.5)
    ratio(
        "Store.add, unknown size >= 2.5x old driver (same)",
        "store-add-unknown",
        "old-add-unknown",
        2.5,
    )

    a, h = _row(rows, "store-add", size), _row(rows, "hashes", size)
    if a and h:
        extra = a["cpu_s_per_gib"] - h["cpu_s_per_gib"]
        add(
            "Store.add CPU <= hashes + 0.3 s/GiB",
            extra <= 0.3,
            f"{a['cpu_s_per_gib']:.2f} s/GiB vs md5+sha512 alone {h['cpu_s_per_gib']:.2f} "
            f"s/GiB: +{extra:.2f} (need <= +0.30){_at(size, GiB)}",
        )
    else:
        add(
            "Store.add CPU <= hashes + 0.3 s/GiB",
            None,
            "not measured (store-add or hashes missing)",
        )

    ratio("Store.get >= 5x old driver", "store-get", "old-get", 5.0)

    for case in ("store-add", "store-get"):
        r = _row(rows, case, big)
        name = f"{case} peak RSS < 150 MiB at 4 GiB"
        if not r:
            add(name, None, f"not measured ({case} missing)")
        else:
            add(name, r["rss_mib"] < 150, f"{r['rss_mib']:.0f} MiB{_at(big, 4 * GiB)}")

    for case in ("store-add", "raw-write"):
        dense, sparse = _row(rows, case, size), _row(rows, case, size, "sparse")
        name = f"{case}: 75%-zero image in <= 35% of the dense time, only non-zero objects"
        if not dense or not sparse:
            add(name, None, f"not measured ({case} dense and sparse needed)")
            continue
        share = sparse["median_s"] / dense["median_s"]
        alloc, want = sparse.get("allocated"), sparse.get("expected_allocation")
        exact = alloc is not None and alloc == want
        add(
            name,
            share <= 0.35 and exact,
            f"{sparse['median_s']:.2f} s vs {dense['median_s']:.2f} s = {share:.0%} "
            f"(need <= 35%); allocated {_mib(alloc)} of {_mib(want)} non-zero"
            f"{_at(size, GiB)}",
        )
    if cluster_kind != "real":
        for t in out:
            t["detail"] += " [embedded FakeSheep: indicative only]"
    return out


def _mib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / MiB:.0f} MiB"


def targets_text(checks: list[dict]) -> str:
    lines = []
    for t in checks:
        mark = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        lines.append(f"  [{mark:^7}] {t['target']}: {t['detail']}")
    return "\n".join(lines)


# --------------------------------------------------------------------- plot


def plot(rows: list[dict], path: str, title: str) -> Optional[str]:
    """Writes a PNG of median throughput (min-max bars); returns why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    ok = [r for r in rows if r["ok"] and r["case"] != "hashes"]
    patterns = sorted({r["pattern"] for r in ok})
    sizes = sorted({r["size"] for r in ok})
    cases = [n for n in NAMES if any(r["case"] == n for r in ok)]
    if not ok:
        return "no successful runs to plot"
    fig, axes = plt.subplots(
        1,
        len(patterns),
        figsize=(6 + 3 * len(sizes) * len(patterns), 5),
        squeeze=False,
        sharey=True,
    )
    width = 0.8 / max(len(cases), 1)
    colours = plt.get_cmap("tab20")
    for ax, pattern in zip(axes[0], patterns):
        for i, case in enumerate(cases):
            xs, ys, lo, hi = [], [], [], []
            for j, size in enumerate(sizes):
                r = _row(ok, case, size, pattern)
                if r:
                    xs.append(j + (i - (len(cases) - 1) / 2) * width)
                    ys.append(r["median_mib_s"])
                    lo.append(r["median_mib_s"] - r["min_mib_s"])
                    hi.append(r["max_mib_s"] - r["median_mib_s"])
            if xs:
                ax.bar(
                    xs,
                    ys,
                    width,
                    yerr=[lo, hi],
                    capsize=2,
                    label=case,
                    color=colours(NAMES.index(case) % 20),
                )
        ax.set_xticks(range(len(sizes)), [_size(s) for s in sizes])
        ax.set_title(pattern)
        ax.set_xlabel("image size")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("MiB/s (median, min-max)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
