"""Small torch-free helpers shared by the exporter, the runtime and the scripts, one per job:

- ``files``: atomic file and directory writes, file digests;
- ``cache``: where clipxai's caches live, and the permission rule they follow;
- ``system``: which CPU this is;
- ``images``: which files count as images;
- ``cli``: how every command-line tool turns an error into one line and an exit status.
"""
