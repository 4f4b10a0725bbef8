"""bench/results.py files a new section under its topic in bench/RESULTS.md, and replaces an existing one in place."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import results

PAGE = """# Benchmark results

## Summary

## Likelihood

<!-- nll-a:start -->
a
<!-- nll-a:end -->

## Speed

<!-- throughput:start -->
t
<!-- throughput:end -->
"""


def test_a_new_section_goes_at_the_end_of_its_topic_and_an_old_one_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "RESULTS.md"
    page.write_text(PAGE)
    monkeypatch.setattr(results, "RESULTS", page)
    results.update_section("nll-b", "b")
    results.update_section("throughput", "t2")
    results.update_section("no-topic-yet", "z")
    text = page.read_text()
    assert text.index("nll-a:end") < text.index("nll-b:start") < text.index("## Speed")
    assert "\nt2\n" in text and "\nt\n" not in text and text.count("throughput:start") == 1
    assert text.rstrip().endswith("<!-- no-topic-yet:end -->")


def test_every_section_of_the_results_page_sits_under_its_topic() -> None:
    text = (REPO / "bench" / "RESULTS.md").read_text()
    topic = None
    for line in text.splitlines():
        if line.startswith("## "):
            topic = line[3:]
        elif line.startswith("<!-- ") and line.endswith(":start -->"):
            name = line[5:-len(":start -->")]
            assert results.topic_of(name) in (topic, None), (name, topic)
