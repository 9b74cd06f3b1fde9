"""The scheduling framework: values (`types`), `Status`, `CycleState`, the
extension-point interfaces, the cache (node table), the queue, and the
runtime that runs one profile's plugins for one pod."""
