// KtstrHost: provisioning (kernels, schedulers, agent, qemu) and scheduler runs.
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
@_exported import KtstrVMM
