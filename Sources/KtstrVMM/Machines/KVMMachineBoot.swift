import KtstrMachine

/// The x86-64 direct Linux boot on KVM objects: guest RAM contents (kernel, zero page,
/// command line, initrd, page tables, GDT, MP table), the in-kernel irqchip + PIT, and
/// each vCPU's CPUID / registers / FPU / MSRs / LAPIC. Pure layouts come from Boot/x86_64;
/// this file only copies them into KVM.
enum KVMLinuxBoot {
    /// What the loader decided, for logs and tests.
    struct Loaded: Sendable {
        var entry: UInt64
        var commandLine: String
        var initrd: (address: UInt64, size: Int)?
    }

    /// Writes everything the kernel expects into `mem`.
    static func loadGuest(image: KernelImage, memoryBytes: UInt64, initrd: [UInt8]?, commandLine: KernelCommandLine,
                          apicIDs: [UInt32], numa: ACPITables.NUMA? = nil, into mem: GuestMemory) throws -> Loaded {
        let entry = try image.load(into: mem)
        var bp = BootParams(header: image.setupHeader)

        let maxCmdline = Int(image.setupHeader?.cmdlineSize ?? 2047)
        let cmd = try commandLine.bytes(maxLength: min(maxCmdline, BootLayout.commandLineMax - 1))
        try mem.write(cmd, at: BootLayout.commandLine)
        bp.setCommandLine(at: BootLayout.commandLine)

        var placed: (UInt64, Int)?
        if let initrd, !initrd.isEmpty {
            let lowTop = min(memoryBytes, BootLayout.mmioGapStart)
            let addr = try BootParams.initrdAddress(size: initrd.count, ramTop: lowTop,
                                                    initrdAddrMax: image.setupHeader?.initrdAddrMax ?? 0x7fff_ffff,
                                                    kernelEnd: image.occupiedRange.upperBound)
            try mem.write(initrd, at: addr)
            bp.setRamdisk(at: addr, size: UInt64(initrd.count))
            placed = (addr, initrd.count)
        }
        try bp.setE820(E820.map(memoryBytes: memoryBytes))
        bp.setACPIRoot(at: BootLayout.acpi)
        try mem.write(bp.bytes, at: BootLayout.zeroPage)
        try PageTables().write(into: mem)
        try mem.write(GDT.bytes, at: BootLayout.gdt)
        try mem.fill(0, at: BootLayout.idt, count: 8)
        try mem.write(try MPTable.build(apicIDs: apicIDs), at: BootLayout.mpTable)
        try mem.write(ACPITables.build(apicIDs: apicIDs, numa: numa), at: BootLayout.acpi)
        return Loaded(entry: entry, commandLine: commandLine.description, initrd: placed)
    }

    /// Irqchip (PIC + IOAPIC + LAPICs) and PIT before any vCPU exists; KVM's private pages
    /// in the MMIO gap.
    static func setUpVM(_ vm: KVMVM) throws {
        try vm.setTSSAddress(BootLayout.kvmTSS)
        try? vm.setIdentityMapAddress(BootLayout.kvmIdentityMap) // Intel EPT only; optional
        try vm.createIRQChip()
        try vm.createPIT2(dummySpeaker: true)
    }

    static func cpuid(_ e: CPUIDEntry) -> KVMCPUIDEntry {
        var k = KVMCPUIDEntry()
        k.function = e.function; k.index = e.index; k.flags = e.flags
        k.eax = e.eax; k.ebx = e.ebx; k.ecx = e.ecx; k.edx = e.edx
        return k
    }

    static func cpuid(_ k: KVMCPUIDEntry) -> CPUIDEntry {
        CPUIDEntry(function: k.function, index: k.index, flags: k.flags, eax: k.eax, ebx: k.ebx, ecx: k.ecx, edx: k.edx)
    }

    static func segment(_ s: SegmentState) -> KVMSegment {
        var k = KVMSegment()
        k.base = s.base; k.limit = s.limit; k.selector = s.selector; k.type = s.type
        k.present = s.present ? 1 : 0; k.dpl = s.dpl; k.db = s.db ? 1 : 0; k.s = s.s ? 1 : 0
        k.l = s.l ? 1 : 0; k.g = s.g ? 1 : 0; k.avl = s.avl ? 1 : 0; k.unusable = s.unusable ? 1 : 0
        return k
    }

    /// CPUID, LAPIC LINTs, FPU and MSRs for every vCPU; registers for the boot vCPU only (APs
    /// wait for the kernel's INIT/SIPI, which sets theirs).
    static func setUpVCPU(_ vcpu: KVMVCPU, index: Int, topology: Topology, supported: [CPUIDEntry], mask: CPUIDMask,
                          entry: UInt64, log: Log) throws {
        let table = CPUID.table(for: index, topology: topology, supported: supported, mask: mask)
        try vcpu.setCPUID(table.map(cpuid))

        var lapic = try vcpu.getLAPIC()
        withUnsafeMutableBytes(of: &lapic.regs) { raw in
            var regs = [UInt8](raw)
            LAPICSetup.apply(to: &regs)
            raw.copyBytes(from: regs)
        }
        try vcpu.setLAPIC(lapic)

        // FPU and MSRs on every vCPU (the same TSC write on all keeps KVM's TSC sync happy);
        // the kernel reprograms them on each AP anyway.
        var fpu = KVMFPUState()
        fpu.fcw = EntryState.fcw
        fpu.mxcsr = EntryState.mxcsr
        try vcpu.setFPU(fpu)
        // One at a time: a host that refuses one (PVM, old KVM) should not cost the rest.
        for msr in BootMSRs.values {
            do { try vcpu.setMSRs([msr]) } catch {
                log.debug("vCPU \(index): MSR 0x\(String(msr.index, radix: 16)) not set: \(error)")
            }
        }

        guard index == 0 else {
            try vcpu.setMPState(.uninitialized)
            return
        }
        let st = EntryState(entry: entry)
        var regs = KVMRegisters()
        regs.rip = st.rip; regs.rsi = st.rsi; regs.rsp = st.rsp; regs.rbp = 0; regs.rflags = st.rflags
        try vcpu.setRegs(regs)

        var s = try vcpu.getSregs()
        s.cs = segment(st.cs)
        s.ds = segment(st.data); s.es = segment(st.data); s.fs = segment(st.data)
        s.gs = segment(st.data); s.ss = segment(st.data)
        s.tr = segment(st.tr)
        s.gdt.base = st.gdtBase; s.gdt.limit = st.gdtLimit
        s.idt.base = st.idtBase; s.idt.limit = st.idtLimit
        s.cr0 = st.cr0; s.cr3 = st.cr3; s.cr4 = st.cr4; s.efer = st.efer
        try vcpu.setSregs(s)

        try vcpu.setMPState(.runnable)
    }
}
