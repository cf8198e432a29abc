// One import gives a scheduler test everything: Swift Testing, the run API and the models
// (RunOutcome from KtstrHost, exit kinds from KtstrProtocol, topology and machine exits from
// KtstrMachine, the failure dump from KtstrSchedExt).
@_exported public import Testing
@_exported public import KtstrHost
@_exported public import KtstrMachine
@_exported public import KtstrProtocol
@_exported public import KtstrSchedExt
