"""The only package that imports streamlit: what the app's pages share.

Modules, one job each: ``guards`` (no raw traceback on a page), ``resources`` (the cached
store and engine, the device, queue counts), ``runsdata`` (runs from the store, cached files
and uploads), ``filters`` (the run filters and their widgets), ``livemetrics`` (incremental
polling for Live), ``trainform`` and ``presets`` (the Train form and its teaching presets),
``cost`` (the estimate shown before launch), ``formatting`` (labels, durations, tables) and
``urlstate`` (widget state kept in the URL). Pages import these modules by name.
"""
