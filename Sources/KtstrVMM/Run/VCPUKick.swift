import Glibc
import KtstrMachine

/// The signal that knocks a vCPU thread out of KVM_RUN.
///
/// Its handler does nothing and is installed without SA_RESTART: the only effect of a kick is
/// that a blocking KVM_RUN returns EINTR. A kick that lands before the thread enters KVM_RUN
/// is lost, so every kick is preceded by setting kvm_run.immediate_exit, which KVM checks on
/// entry. Installed once per process; other threads need not block it.
public enum VCPUKick {
    public static let signal: Int32 = SIGUSR1

    private static let installed: Bool = {
        var sa = sigaction()
        sa.__sigaction_handler = .init(sa_handler: { _ in })
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        return sigaction(signal, &sa, nil) == 0
    }()

    /// Installs the no-op handler (idempotent). Returns false if sigaction failed.
    @discardableResult
    public static func install() -> Bool { installed }

    /// Makes sure the calling (vCPU) thread can receive the kick.
    static func unblockOnCurrentThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
