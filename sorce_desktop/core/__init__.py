"""The engine: no Qt anywhere in this package. The front ends call ``controller.LibraryController`` (one per
library: the policy in one place); below it, the parts by package: photos, indexing, models, text, search, store."""
