"""Datasets beyond one machine: the Ray mechanism behind ``clipxai segment --ray`` and
``clipxai evaluate segmentation --ray`` (docs/scale.md). Needs the ``clipxai[ray]`` extra; only
the apps' Ray runners (apps/segment/ray.py, apps/evaluate/ray.py) import it.

    connect.py   start or join Ray, with one-line errors
    nodes.py     each node verifies the bundle and warms its graph cache once
    pool.py      items through stateful actors with Ray Data's map_batches; actor counts clamped to the work
"""
