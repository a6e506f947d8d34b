"""The operators' side: ``ai-agent-rollout`` and what it stands on. Never imported by a
handler at run time.

One naming rule: a subject's decisions are pure in ``<subject>`` (:mod:`.edits`,
:mod:`.ramp`, :mod:`.retire`), its reads and writes in ``<subject>_io``, its command line
in ``cli_<subject>`` (:mod:`.cli` for the flag edits); :mod:`.store` and :mod:`.audit` are
where every write goes.
"""
