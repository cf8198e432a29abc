// KtstrHost: provisioning (kernels, schedulers, agent, qemu) and scheduler runs.
@_exported import KtstrVMM
