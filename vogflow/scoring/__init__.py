"""The VoG engine: the equations (``vog``), input adapters (``inputs``), the streaming gradient
pass (``stream``), its results (``results``), sharding over ranks (``shards``) and the one entry
point (``extract``)."""
