// Scheduling calls the Glibc module does not import (GNU extensions, the variadic syscall()):
// resolved with dlsym once, like Sys.rebootFn. x86-64 only, as the agent is.
import Glibc
import KtstrProtocol

enum SchedCalls {
    /// SCHED_* policy numbers (<linux/sched.h>; SCHED_BATCH and SCHED_IDLE are not imported).
    static func policyNumber(_ p: ScenarioPolicy) -> Int32 {
        switch p {
        case .other: 0
        case .batch: 3
        case .idle: 5
        }
    }

    private static func symbol<T>(_ name: String, as: T.Type) -> T? {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(sym, to: T.self)
    }

    private typealias AffinityFn = @convention(c) (pid_t, Int, UnsafeMutableRawPointer?) -> Int32
    private static let setAffinityFn = symbol("sched_setaffinity", as: AffinityFn.self)
    private static let getAffinityFn = symbol("sched_getaffinity", as: AffinityFn.self)
    private static let getCPUFn = symbol("sched_getcpu", as: (@convention(c) () -> Int32).self)
    /// glibc's syscall(); its variadic arguments are all integers, passed in registers, so a
    /// fixed six-argument signature calls it correctly on x86-64.
    private static let syscallFn = symbol("syscall", as: (@convention(c) (Int, Int, Int, Int, Int, Int, Int) -> Int).self)

    /// Words of the CPU masks passed to the kernel (1024 CPUs, glibc's cpu_set_t).
    static let maskWords = Scenario.maxCPUs / 64

    /// The CPU the caller runs on; -1 when unknown.
    static func currentCPU() -> Int { Int(getCPUFn?() ?? -1) }

    /// sched_setaffinity(pid, cpus); false (errno set) when it failed.
    static func setAffinity(_ pid: pid_t, _ cpus: [Int]) -> Bool {
        var mask = [UInt64](repeating: 0, count: maskWords)
        for c in cpus where c >= 0 && c < Scenario.maxCPUs { mask[c / 64] |= 1 << UInt64(c % 64) }
        guard let f = setAffinityFn else { errno = ENOSYS; return false }
        return mask.withUnsafeMutableBytes { f(pid, $0.count, $0.baseAddress) } == 0
    }

    /// The CPUs `pid` may run on; nil when unreadable.
    static func affinity(_ pid: pid_t) -> [Int]? {
        var mask = [UInt64](repeating: 0, count: maskWords)
        guard let f = getAffinityFn, mask.withUnsafeMutableBytes({ f(pid, $0.count, $0.baseAddress) }) == 0 else { return nil }
        return (0..<Scenario.maxCPUs).filter { mask[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
    }

    /// sched_setscheduler(pid, policy, priority 0).
    static func setPolicy(_ pid: pid_t, _ p: ScenarioPolicy) -> Bool {
        var param = sched_param(sched_priority: 0)
        return sched_setscheduler(pid, policyNumber(p), &param) == 0
    }

    static func setNice(_ pid: pid_t, _ nice: Int) -> Bool {
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(pid), Int32(nice)) == 0
    }

    // futex(2) on a 32-bit word in MAP_SHARED memory (shared between processes: no
    // FUTEX_PRIVATE_FLAG).
    private static let sysFutex = 202, futexWait = 0, futexWake = 1

    /// Sleeps while `*word == expected` (returns at once when it differs), at most `timeoutNanos`.
    static func futexWait(_ word: UnsafeMutablePointer<UInt32>, expected: UInt32, timeoutNanos: Int = 100_000_000) {
        var ts = timespec(tv_sec: timeoutNanos / 1_000_000_000, tv_nsec: timeoutNanos % 1_000_000_000)
        _ = withUnsafeMutablePointer(to: &ts) { t in
            syscallFn?(sysFutex, Int(bitPattern: word), futexWait, Int(expected), Int(bitPattern: t), 0, 0)
        }
    }

    static func futexWake(_ word: UnsafeMutablePointer<UInt32>, count: Int32 = Int32.max) {
        _ = syscallFn?(sysFutex, Int(bitPattern: word), futexWake, Int(count), 0, 0, 0)
    }
}
