import Glibc
import KtstrMachine

/// The signal that knocks a vCPU thread out of KVM_RUN: SIGRTMIN+3.
///
/// A real-time signal, not SIGUSR1/SIGUSR2: those belong to the process that links the VMM
/// (a test, a harness, a debugger script) and installing a handler there would silently
/// replace theirs. glibc reserves the first two real-time signals for itself (NPTL), so
/// SIGRTMIN is read at run time; +3 leaves SIGRTMIN+0...+2 to libraries that grab the first
/// free one.
///
/// Its handler does nothing and is installed without SA_RESTART: the only effect of a kick is
/// that a blocking KVM_RUN returns EINTR. A kick that lands before the thread enters KVM_RUN
/// is lost, so every kick is preceded by setting kvm_run.immediate_exit, which KVM checks on
/// entry. Installed once per process; other threads need not block it.
public enum VCPUKick {
    /// SIGRTMIN+3 (Swift does not import the SIGRTMIN macro; it is this glibc call).
    public static let signal: Int32 = __libc_current_sigrtmin() + 3

    /// Name for messages ("SIGRTMIN+3").
    public static let signalName = "SIGRTMIN+3"

    private static let installResult: Result<Void, SystemCallError> = {
        var sa = sigaction()
        sa.__sigaction_handler = .init(sa_handler: { _ in })
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        if sigaction(signal, &sa, nil) != 0 { return .failure(.lastError("sigaction(\(signalName))")) }
        return .success(())
    }()

    /// Installs the no-op handler (idempotent; a failure is remembered and rethrown).
    public static func install() throws(SystemCallError) {
        try installResult.get()
    }

    /// Makes sure the calling (vCPU) thread can receive the kick.
    static func unblockOnCurrentThread() throws(SystemCallError) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        // pthread_sigmask returns the error instead of setting errno.
        let rc = pthread_sigmask(SIG_UNBLOCK, &set, nil)
        if rc != 0 { throw SystemCallError(call: "pthread_sigmask(SIG_UNBLOCK, \(signalName))", errno: rc) }
    }
}
