"""The ``clipxai`` command and its subcommands (main.py): parse flags, build a job, call a typed
function, report. The only place (with the exporter's two command modules) that imports click."""
