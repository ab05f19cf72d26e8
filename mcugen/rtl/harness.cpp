// mcugen's cycle-exact harness for the CV32E40P RTL (cv32e40p_top, verilated): one 4 MiB memory
// on both OBI ports plus the MMIO registers of rtl_io.h.
//
//   sim ELF [--in FILE] [--out FILE] [--prof FILE] [--stall-percent P] [--max-cycles N]
//
// stdout ends with "cycles N" and one status line: "exit E", "trap mcause 0x.. mepc 0x..",
// "fault ..." (an access outside memory and MMIO, a wfi with no interrupt) or "limit N".
// Process status: 0 exit 0, 1 non-zero exit, 2 trap, 3 cycle limit, 4 fault, 5 bad usage/ELF.
//
// Memory timing: a request is granted in the cycle it is made (unless a stall is drawn) and its
// data arrives in the next cycle, so at most one transaction per port completes per cycle.
#include <elf.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "Vcv32e40p_top.h"
#include "rtl_io.h"
#include "verilated.h"

namespace {

enum Status { kExit0 = 0, kExitNonZero = 1, kTrap = 2, kLimit = 3, kFault = 4, kUsage = 5 };

struct Options {
    std::string elf, in, out, prof;
    unsigned stall_percent = 0;
    uint64_t max_cycles = 100000000;
};

[[noreturn]] void usage_error(const std::string &what) {
    std::fprintf(stderr, "sim: %s\n", what.c_str());
    std::fprintf(stderr, "usage: sim ELF [--in FILE] [--out FILE] [--prof FILE] "
                         "[--stall-percent P] [--max-cycles N]\n");
    std::exit(kUsage);
}

Options parse_options(int argc, char **argv) {
    Options opt;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        bool has_value = i + 1 < argc;
        if (arg.rfind("--", 0) != 0) {
            if (!opt.elf.empty()) usage_error("more than one ELF given");
            opt.elf = arg;
        } else if (!has_value) {
            usage_error(arg + " needs a value");
        } else if (arg == "--in") {
            opt.in = argv[++i];
        } else if (arg == "--out") {
            opt.out = argv[++i];
        } else if (arg == "--prof") {
            opt.prof = argv[++i];
        } else if (arg == "--stall-percent") {
            opt.stall_percent = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
            if (opt.stall_percent > 95) usage_error("--stall-percent must be 0..95");
        } else if (arg == "--max-cycles") {
            opt.max_cycles = std::strtoull(argv[++i], nullptr, 10);
        } else {
            usage_error("unknown option " + arg);
        }
    }
    if (opt.elf.empty()) usage_error("no ELF given");
    return opt;
}

std::string read_file(const std::string &path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) usage_error("cannot read " + path);
    return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void write_file(const std::string &path, const std::string &data) {
    if (path.empty()) return;
    std::ofstream file(path, std::ios::binary);
    file.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!file) usage_error("cannot write " + path);
}

// The PT_LOAD segments at their physical (load) addresses: .data's image stays in flash for
// crt0.S to copy, exactly as on a board. Returns the entry point, the boot address.
uint32_t load_elf(const std::string &path, std::vector<uint8_t> &mem) {
    std::string image = read_file(path);
    Elf32_Ehdr header;
    if (image.size() < sizeof header) usage_error(path + " is not an ELF file");
    std::memcpy(&header, image.data(), sizeof header);
    if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 || header.e_ident[EI_CLASS] != ELFCLASS32 ||
        header.e_machine != EM_RISCV)
        usage_error(path + " is not a 32-bit RISC-V ELF file");
    for (unsigned i = 0; i < header.e_phnum; i++) {
        Elf32_Phdr seg;
        size_t at = header.e_phoff + size_t(i) * header.e_phentsize;
        if (at + sizeof seg > image.size()) usage_error(path + ": truncated program headers");
        std::memcpy(&seg, image.data() + at, sizeof seg);
        if (seg.p_type != PT_LOAD || seg.p_memsz == 0) continue;
        if (uint64_t(seg.p_paddr) + seg.p_memsz > mem.size() || seg.p_filesz > seg.p_memsz ||
            uint64_t(seg.p_offset) + seg.p_filesz > image.size())
            usage_error(path + ": a segment lies outside the 4 MiB memory");
        std::memcpy(mem.data() + seg.p_paddr, image.data() + seg.p_offset, seg.p_filesz);
    }
    if (header.e_entry % 4 != 0) usage_error(path + ": entry point not word aligned");
    return header.e_entry;
}

// Deterministic, so a run with stalls is reproducible to the cycle.
struct StallDraw {
    uint32_t state = 0x2545f491u;
    unsigned percent = 0;
    bool stall() {
        if (percent == 0) return false;
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        return state % 100 < percent;
    }
};

// Everything the program can see besides the core: memory, MMIO and the streams.
struct Bus {
    std::vector<uint8_t> mem = std::vector<uint8_t>(RTL_MEM_BYTES);
    std::string input, output, profile;
    size_t in_pos = 0;
    bool done = false;
    Status status = kExit0;
    std::string status_line;
    uint32_t trap_cause = 0;

    void finish(Status why, const std::string &line) {
        done = true;
        status = why;
        status_line = line;
    }
    void fault(const char *what, uint32_t addr) {
        char line[96];
        std::snprintf(line, sizeof line, "fault %s at unmapped address 0x%08x", what, addr);
        finish(kFault, line);
    }
    static bool in_mmio(uint32_t addr) { return addr - RTL_MMIO_BASE < RTL_MMIO_BYTES; }

    uint32_t fetch(uint32_t addr) {
        if (addr >= RTL_MEM_BYTES) {
            fault("instruction fetch", addr);
            return 0;
        }
        return word_at(addr & ~3u);
    }
    uint32_t word_at(uint32_t addr) const {
        uint32_t word;
        std::memcpy(&word, mem.data() + addr, 4);
        return word;
    }

    uint32_t load(uint32_t addr) {
        if (addr < RTL_MEM_BYTES) return word_at(addr & ~3u);
        if (in_mmio(addr)) return mmio_read(addr - RTL_MMIO_BASE);
        fault("load", addr);
        return 0;
    }
    uint32_t mmio_read(uint32_t offset) {
        if ((offset & ~3u) == RTL_IN_LEFT_OFFSET) return uint32_t(input.size() - in_pos);
        if ((offset & ~3u) != RTL_IN_WORD_OFFSET) return 0;
        uint32_t word = 0;
        size_t n = std::min<size_t>(4, input.size() - in_pos);
        std::memcpy(&word, input.data() + in_pos, n);
        in_pos += n;
        return word;
    }

    void store(uint32_t addr, uint32_t data, unsigned byte_enable) {
        if (addr < RTL_MEM_BYTES) {
            for (unsigned b = 0; b < 4; b++)
                if (byte_enable >> b & 1) mem[(addr & ~3u) + b] = uint8_t(data >> (8 * b));
        } else if (in_mmio(addr)) {
            mmio_write(addr - RTL_MMIO_BASE, data);
        } else {
            fault("store", addr);
        }
    }
    void mmio_write(uint32_t offset, uint32_t data) {
        switch (offset & ~3u) {
        case RTL_EXIT_OFFSET:
            finish(data == 0 ? kExit0 : kExitNonZero, "exit " + std::to_string(int32_t(data)));
            break;
        case RTL_PUTC_OFFSET: std::fputc(int(data & 0xff), stderr); break;
        case RTL_OUT_WORD_OFFSET: output.append(reinterpret_cast<const char *>(&data), 4); break;
        case RTL_PROF_BYTE_OFFSET: profile.push_back(char(data & 0xff)); break;
        case RTL_TRAP_CAUSE_OFFSET: trap_cause = data; break;
        case RTL_TRAP_PC_OFFSET: {
            char line[64];
            std::snprintf(line, sizeof line, "trap mcause 0x%08x mepc 0x%08x", trap_cause, data);
            finish(kTrap, line);
            break;
        }
        default: break;
        }
    }
};

// One OBI port's response pipeline: what was granted at the last rising edge.
struct Response {
    bool valid = false;
    uint32_t rdata = 0;
};

void tie_off_inputs(Vcv32e40p_top &top, uint32_t boot) {
    top.pulp_clock_en_i = 1;
    top.scan_cg_en_i = 0;
    top.boot_addr_i = boot;
    top.mtvec_addr_i = boot;           // until crt0.S sets mtvec
    top.dm_halt_addr_i = RTL_MMIO_BASE;  // unmapped for fetches: debug is never requested
    top.dm_exception_addr_i = RTL_MMIO_BASE;
    top.hart_id_i = 0;
    top.irq_i = 0;
    top.debug_req_i = 0;
    top.fetch_enable_i = 1;
}

void reset(Vcv32e40p_top &top) {
    top.rst_ni = 0;
    for (int i = 0; i < 4; i++) {
        top.clk_i = 0;
        top.eval();
        top.clk_i = 1;
        top.eval();
    }
    top.clk_i = 0;
    top.rst_ni = 1;
    top.eval();
}

// One clock cycle: responses and grants are driven in the low phase, then the rising edge.
// Verilator settles logic fed by the new grants before the edge's flops sample them.
void step(Vcv32e40p_top &top, Bus &bus, StallDraw &draw, Response &instr, Response &data) {
    top.clk_i = 0;
    top.instr_rvalid_i = instr.valid;
    top.instr_rdata_i = instr.rdata;
    top.data_rvalid_i = data.valid;
    top.data_rdata_i = data.rdata;
    top.instr_gnt_i = 0;
    top.data_gnt_i = 0;
    top.eval();

    bool instr_grant = top.instr_req_o && !draw.stall();
    bool data_grant = top.data_req_o && !draw.stall();
    uint32_t instr_addr = top.instr_addr_o, data_addr = top.data_addr_o;
    uint32_t wdata = top.data_wdata_o;
    bool write = top.data_we_o;
    unsigned byte_enable = top.data_be_o;
    top.instr_gnt_i = instr_grant;
    top.data_gnt_i = data_grant;
    top.clk_i = 1;
    top.eval();

    instr = Response{instr_grant, instr_grant ? bus.fetch(instr_addr) : 0};
    data = Response{data_grant, 0};
    if (data_grant && write) bus.store(data_addr, wdata, byte_enable);
    if (data_grant && !write) data.rdata = bus.load(data_addr);
}

}  // namespace

int main(int argc, char **argv) {
    Options opt = parse_options(argc, argv);
    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vcv32e40p_top>(context.get());
    Bus bus;
    uint32_t boot = load_elf(opt.elf, bus.mem);
    if (!opt.in.empty()) bus.input = read_file(opt.in);

    tie_off_inputs(*top, boot);
    reset(*top);
    StallDraw draw;
    draw.percent = opt.stall_percent;
    Response instr, data;
    uint64_t cycles = 0;
    while (!bus.done) {
        if (cycles >= opt.max_cycles) {
            bus.finish(kLimit, "limit " + std::to_string(opt.max_cycles));
            break;
        }
        step(*top, bus, draw, instr, data);
        cycles++;
        // no interrupt is ever raised, so a sleeping core would only burn the cycle budget
        if (top->core_sleep_o) bus.finish(kFault, "fault wfi with no interrupt source");
    }
    top->final();

    write_file(opt.out, bus.output);
    write_file(opt.prof, bus.profile);
    std::fflush(stderr);
    std::printf("cycles %llu\n%s\n", static_cast<unsigned long long>(cycles), bus.status_line.c_str());
    return bus.status;
}
