"""Where replicas run. ``local`` starts them as subprocesses on this machine; a cluster provider
implements the same small interface later."""
