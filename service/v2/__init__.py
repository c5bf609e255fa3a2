"""The Open Inference Protocol (KServe v2), beside the service's own API: REST routes under ``/v2`` (``rest``)
and the gRPC ``GRPCInferenceService`` (``grpc_server``), both thin adapters over ``protocol`` and ``tensors``."""
