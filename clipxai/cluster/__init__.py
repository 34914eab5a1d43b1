"""Datasets beyond one machine: clipxai-segment and scripts/evaluate.py on a Ray cluster
(``--ray [ADDRESS]``; docs/scale.md). Needs the ``clipxai[ray]`` extra; nothing else imports it.

    connect.py   start or join Ray, with one-line errors
    nodes.py     each node verifies the bundle and warms its graph cache once
    pool.py      items through stateful actors with Ray Data's map_batches
    segment.py   clipxai-segment --ray: per-image files + a Parquet table
    evaluate.py  evaluate.py --ray: confusion matrices summed exactly
"""
