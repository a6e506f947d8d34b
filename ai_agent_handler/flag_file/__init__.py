"""The flag machinery: what a flag file is, where it is read from, how it is evaluated.

* :mod:`.document`: flagd documents, parsed, validated and serialized (pure).
* :mod:`.sources`: where a flag file comes from, a local path or an S3 object (I/O only).
* :mod:`.provider`: :class:`~ai_agent_handler.FlagFileProvider`, flagd's evaluator over a
  source, live reloaded, keeping the last good flags on any fault.
* :mod:`.default_provider`: registers that provider for the handler's domain, once per
  process, from the handler's settings.
"""
