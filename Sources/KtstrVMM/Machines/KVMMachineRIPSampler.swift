import Foundation
import KtstrMachine

/// `KTSTR_LOG=debug` on a host that emulates kernel code (the PVM-safe policy): every 30 s the
/// machine is frozen for a moment and each vCPU's RIP and RSP are logged, so a boot that goes
/// silent for minutes shows where it spends them (symbolize with the kernel's kallsyms).
extension KVMMachine {
    static let ripSampleInterval: TimeInterval = 30

    /// Starts the sampler thread when it applies; it ends with the machine.
    func startRIPSampler() {
        guard configuration.log.level == .debug, cpuidMask == .emulatedKernelCode else { return }
        let t = Thread { [weak self] in
            var n = 0
            while true {
                Thread.sleep(forTimeInterval: Self.ripSampleInterval)
                guard let self, self.runner.isRunning else { return }
                n += 1
                guard let snaps = try? self.runner.freeze(timeout: .seconds(5)) else { continue }
                self.runner.thaw()
                let text = snaps.map { "vCPU \($0.cpu) rip=0x\(String($0.rip, radix: 16)) rsp=0x\(String($0.rsp, radix: 16))\($0.halted == true ? " (halted)" : "")" }
                self.configuration.log.debug("kvm sample \(n) (+\(Int(Self.ripSampleInterval) * n) s): " + text.joined(separator: ", "))
            }
        }
        t.name = "ktstr-kvm-rip-sampler"
        t.start()
    }
}
