"""Notifications of new violations (issue 24): :mod:`.changes` (what changed, pure),
:mod:`.config` (the ``--notify`` file) and :mod:`.send` (receivers, retries, dedup state)."""
