"""The operators' side: ``ai-agent-rollout`` and what it stands on. Never imported by a
handler at run time.

* :mod:`.edits`: pure edits of the flag in a document (allow, percent, set, rollback) and
  the rollout state in operator terms.
* :mod:`.store`: the write transaction (:func:`.store.commit`, :func:`.store.seed`) on a
  local file (lock, atomic rename) or an S3 object (conditional put), versioned (versions
  only grow) and audited.
* :mod:`.explain`: the key one endpoint gets and the rule that decides it.
* :mod:`.cli`: the ``ai-agent-rollout`` command line: checks arguments, finds the file
  (``--phase``: the repository checkout's, never the installed package's), prints results.
"""
