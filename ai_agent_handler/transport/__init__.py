"""How calls leave the handler: every Lambda / SQS / local call, and background streaming.

* :mod:`.invoke`: :class:`~ai_agent_handler.Utility`, the one edge every call passes
  (Lambda ``Invoke``, SQS FIFO, ``test_mode`` local dispatch) and the wire format.
* :mod:`.stream`: the bounded background dispatcher ``send_data_to_stream`` hands chunks to.
"""
