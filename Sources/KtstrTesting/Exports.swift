// One import gives a scheduler test everything: Swift Testing, the run API and the models.
@_exported public import Testing
@_exported public import KtstrHost
@_exported public import KtstrVMM
