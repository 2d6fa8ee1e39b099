"""The adapters: ARM and Resource Graph (inventory, paging, links, the change feed), Table Storage
(the store, the exemptions table), the SDK shortcuts (one seam per SDK), HTTP policies, the
credential, and the threads that carry the Functions invocation context. They import the core,
never the runs."""
