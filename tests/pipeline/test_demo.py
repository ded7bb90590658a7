"""The demo's synthetic web behaves as its ground truth declares, whatever the seed."""

from __future__ import annotations

import pytest

from pipeline import demo


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_every_probed_link_behaves_as_declared(seed, tmp_path):
    cfg, _, truth = demo.synthesize(tmp_path, 300, seed)
    all_ok, bad = demo.probe_links(cfg, truth, 8)
    assert all_ok and bad == 0, (seed, bad)


def test_a_link_on_an_opted_out_page_keeps_its_own_form():
    assert demo._expected("page_opted_out", "none", "http://h/i/abc.svg") == "svg"
    assert demo._expected("page_opted_out", "none", "data:image/png;base64,AAAA") == "not_http"
    assert demo._expected("page_opted_out", "none", "http://h/i/abc.jpg") == demo.EXPECTED["none"]
