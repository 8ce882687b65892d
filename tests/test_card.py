"""The repository's card, licence and citation: metadata the Hub and citation tools read."""

from pathlib import Path

import yaml

from zoo.folder.card import size_category

ROOT = Path(__file__).resolve().parents[1]


def test_dataset_card_front_matter_is_hub_card_data():
    from huggingface_hub import DatasetCard

    data = DatasetCard.load(ROOT / "DATASET_CARD.md").data
    assert data.license == "cc-by-4.0" and data.pretty_name == "Phase Zoo: reference zoos"
    assert data.task_categories == ["tabular-regression", "tabular-classification"]
    assert data.size_categories == [size_category(1176)] == ["1K<n<10K"]  # mnist1d-mlp rows


def test_licence_and_citation_files_are_there_and_parse():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["title"].startswith("Phase Zoo") and citation["authors"]
    assert [r["year"] for r in citation["references"]] == [2021, 2025]


def test_size_categories_follow_the_hubs_bounds():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 10**9, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1B<n<10B", "n>1T"]


def test_card_has_the_hub_templates_sections_filled_from_the_zoo(tiny_zoo, tmp_path):
    import shutil

    from zoo.folder.card import write_card

    root = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, root)
    text = write_card(root).read_text()
    headers = ["## Dataset Description", "## Uses", "### Out-of-scope use", "## Source Data",
               "## Bias, Risks, and Limitations"]
    assert all(f"\n{header}\n" in text for header in headers)
    positions = [text.index(header) for header in headers]
    assert positions == sorted(positions)
    assert "`mlp` models trained on `mnist1d`" in text
    assert "MNIST-1D (Greydanus" in text and "(Apache-2.0)" in text
    assert "## Benchmark" not in text  # only once `zoo benchmark` has run
