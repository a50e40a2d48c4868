"""Write the "curated" list of the synthetic OOD set for RbA's fine-tune (Table 2, "+ Ours (curated)").

    python -m synthrel.ood_detection.curated <ood_objects root> <list file> [--every N]

writes every item the OOD-object stage accepted (one id a line, with its object as a comment), or every N-th
one; edit the file (delete the lines of the items to leave out) and point
`stages.ood_detection.rba.finetune.curated_list` at it. "all" is every accepted item, without a list.
"""

from __future__ import annotations

import argparse

from synthrel.jobs import write_text_atomic


def main(argv=None) -> int:
    from synthrel.data.synthetic import OODObjectsDataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the OOD-object set (datasets.ood_objects.root)")
    parser.add_argument("out", help="the list file to write")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th accepted item (default: all)")
    args = parser.parse_args(argv)
    items = OODObjectsDataset(args.root).items[:: max(1, args.every)]
    lines = ["# accepted OOD-object items for RbA's curated fine-tune: one id a line; delete lines to leave out"]
    lines += [f"{it.id}  # {it.meta.get('object_slug', '')}" for it in items]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"{len(items)} item(s) written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
