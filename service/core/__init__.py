"""The transport-neutral request core: errors and their codes, metrics, schemas, admission and per-client
budgets. Every protocol adapter (``service.http``, ``service.v2``) and every layer below them imports from here;
nothing here imports an adapter."""
