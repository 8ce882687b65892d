"""Hugging Face datasets plus model averaging: a cell's seeds from load_dataset, averaged.

    python examples/hf_averaging.py ZOO_FOLDER
"""

import argparse

import datasets

from loaders import average, interpolate, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", help="a zoo folder")
    args = parser.parse_args()
    models = datasets.load_dataset(args.zoo, split="train+validation+test")
    rows = models.remove_columns("weights").to_pandas()
    last = rows[rows.epoch == rows.epoch.max()]
    print(last.groupby("phase", dropna=False).size().rename("models at the last epoch"))
    cell = last.cell_id.iloc[0]
    seeds = last[last.cell_id == cell].sort_values("seed")
    members = [load_model(args.zoo, m, int(e)) for m, e in zip(seeds.model_id, seeds.epoch)]
    averaged = average(members)
    halfway = interpolate(members[0], members[-1], 0.5)
    print(f"cell {cell} (phase {seeds.phase.iloc[0]}): averaged {len(members)} seeds into "
          f"{type(averaged).__name__}; halfway model has "
          f"{sum(p.numel() for p in halfway.parameters())} parameters")


if __name__ == "__main__":
    main()
