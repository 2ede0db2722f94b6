import NftIR
import ServiceModel

/// Expressions → statements: the inverse of `Lowering`, for exactly the shapes it emits.
///
/// Each candidate statement is read off the expressions, lowered again and compared with the
/// expressions it claims to cover, so anything that is not byte for byte what nftproxy writes
/// (a hand-edited rule, another tool's rule) is refused rather than guessed at.
///
/// `tcp dport` and `th dport` load the same bytes. Like nft's own listing, a transport-header
/// port load after a `meta l4proto tcp` match reads as `tcp dport`, anywhere else as `th dport`
/// (and `Lowering` refuses the one spelling that would not read back).
enum Raising {
    static func rule(_ expressions: [Expression], family: Family, sets: SetCatalog) -> [Statement]? {
        var statements: [Statement] = []
        statements.reserveCapacity(min((expressions.count + 1) / 2, 4))  // most statements take 2 or 3 expressions
        var proto: L4Protocol?
        var index = 0
        while index < expressions.count {
            guard let statement = candidate(expressions, at: index, family: family, proto: proto) else { return nil }
            // Lowered again, the statement must be the dumped expressions from `index`, as the kernel dumps them back.
            var lowered = ExpressionMatcher(expressions, at: index)
            guard (try? Lowering.statement(statement, family: family, sets: sets, into: &lowered)) != nil, lowered.matches,
                  lowered.position > index
            else { return nil }
            statements.append(statement)
            if case .l4proto(let matched) = statement { proto = matched }
            index = lowered.position
        }
        guard (try? Lowering.checkProtocolContext(statements)) != nil else { return nil }
        return statements
    }

    /// The statement whose lowering should start at `expressions[start]`, read from its distinctive parts.
    private static func candidate(_ expressions: [Expression], at start: Int, family: Family, proto: L4Protocol?) -> Statement? {
        // Every fixed shape is told apart by its first three expressions.
        let items = Window(expressions, from: start)
        guard let first = items.first else { return nil }
        switch first {
        case .payload, .meta(K.metaL4proto, _), .ct(_, _, K.ctDirOriginal?):
            if let keyed = keyedStatement(expressions, at: start, family: family, proto: proto) { return keyed }
            if case .meta = first {
                guard items.count >= 2, case .cmp(_, _, let data) = items[1], data.count == 1,
                      let proto = L4Protocol.allCases.first(where: { $0.number == data[0] }) else { return nil }
                return .l4proto(proto)
            }
            return addressMatch(items, family: family)
        case .meta(K.metaMark, _):
            guard items.count >= 3, case .bitwise(_, _, let mask, let xor) = items[1], let maskValue = u32(mask), let xorValue = u32(xor) else { return nil }
            switch items[2] {
            case .cmp: return .markBitClear(maskValue)
            case .metaSet: return maskValue == 0xffff_ffff ? .toggleMarkBit(xorValue) : .setMarkBit(xorValue)
            default: return nil
            }
        case .ct(K.ctState, _, .none):
            return .ctStateNew
        case .ct(K.ctStatus, _, .none):
            return .ctStatusDNAT
        case .fib(let flags, _, _):
            return .fibLocal(flags == K.fibSaddr ? .saddr : .daddr)
        case .numgen(_, let modulus, _, _):
            return .numgenIncZero(modulus: modulus)
        case .immediateData(_, let address):
            guard items.count >= 2, case .immediateData(_, let port) = items[1], port.count == 2,
                  let ip = IPAddress(bytes: address) else { return nil }
            return .dnat(ip, port: UInt16(port[0]) << 8 | UInt16(port[1]))
        case .masq(let flags):
            return .masquerade(fullyRandom: flags == K.natRandomFully)
        case .reject:
            return .reject
        case .immediateVerdict(let code, let chain):
            return verdict(code: code, chain: chain).map { .verdict($0) }
        default:
            return nil
        }
    }

    /// A statement keyed by a concatenation of loads into consecutive slots: `… @set`,
    /// `… != @set`, `… vmap @map`, `dnat to … map @map`, or `update @map { key : data }`.
    private static func keyedStatement(_ items: [Expression], at start: Int, family: Family, proto: L4Protocol?) -> Statement? {
        var loads: [(operand: Operand, slot: Int)] = []
        for position in start..<items.count {
            let item = items[position]
            let slot: UInt32
            var selector: Selector = .saddr
            var constant: KeyValue?
            switch item {
            case .payload(K.networkHeader, let offset, _, let dreg):
                if offset == Lowering.addressOffset(.saddr, family) { selector = .saddr }
                else if offset == Lowering.addressOffset(.daddr, family) { selector = .daddr }
                else { return nil }
                slot = dreg
            case .payload(K.transportHeader, 2, 2, let dreg):
                selector = proto.map { .dport($0) } ?? .thDport
                slot = dreg
            case .meta(K.metaL4proto, let dreg):
                selector = .l4proto
                slot = dreg
            case .ct(K.ctDstIP, let dreg, K.ctDirOriginal?) where family == .ip,
                 .ct(K.ctDstIP6, let dreg, K.ctDirOriginal?) where family == .ip6:
                selector = .ctOriginalDaddr
                slot = dreg
            case .ct(K.ctProtoDst, let dreg, K.ctDirOriginal?):
                selector = .ctOriginalProtoDst
                slot = dreg
            case .byteorder:
                continue  // part of an interval set's key; the lowering puts it back
            case .bitwise(let sreg, let dreg, let mask, let xor):
                // `ip daddr & 0.0.0.255`: the address just loaded, its low bits kept in its own register.
                let bits = UInt8(mask.reduce(0) { $0 + $1.nonzeroBitCount })
                guard sreg == dreg, let last = loads.last, last.operand == .field(.daddr), Register.slot(dreg) == last.slot,
                      xor.allSatisfy({ $0 == 0 }), mask.count == family.ipFamily.addressLength,
                      IPAddress(bytes: mask) == Selector.lowBitsMask(bits, family) else { return nil }
                loads[loads.count - 1].operand = .field(.maskedDaddr(lowBits: bits))
                continue
            case .immediateData(let dreg, let bytes):
                // A constant in an update's data (`: 10.180.0.1 . 80`).
                guard let value = ElementKey.decode(bytes, types: [bytes.count == 2 ? .inetService : .address(family)])?.first else { return nil }
                constant = value
                slot = dreg
            case .lookup(_, let dreg, let set, let flags):
                let selectors = loads.compactMap(\.operand.selector)
                guard let name = Name(set), !loads.isEmpty, selectors.count == loads.count else { return nil }
                switch (dreg, flags) {
                case (nil, 0): return .lookup(selectors, set: name)
                case (nil, K.lookupInvert): return .notInSet(selectors, set: name)
                case (K.regVerdict?, 0): return .vmap(selectors, map: name)
                case (K.reg1?, 0):
                    guard position + 1 < items.count, case .nat = items[position + 1] else { return nil }
                    return .dnatMap(selectors, map: name)
                default: return nil
                }
            case .dynset(K.dynsetUpdate, _, let sregData, let set, let timeout):
                guard let name = Name(set), !loads.isEmpty, let milliseconds = UInt32(exactly: timeout) else { return nil }
                let dataSlot = sregData.flatMap(Register.slot) ?? Int.max
                let keyLoads = loads.filter { $0.slot < dataSlot }
                let key = keyLoads.compactMap(\.operand.selector)
                guard key.count == keyLoads.count else { return nil }
                let data = loads.filter { $0.slot >= dataSlot }.map(\.operand)
                return .update(map: name, key: key, timeoutMilliseconds: milliseconds, data: data)
            default:
                return nil
            }
            guard let start = Register.slot(slot) else { return nil }
            loads.append((constant.map { .value($0) } ?? .field(selector), start))
        }
        return nil
    }

    /// `ip saddr 10.0.0.0/8`, `ip6 daddr != ::1`: a load, maybe a mask, a comparison.
    private static func addressMatch(_ items: Window, family: Family) -> Statement? {
        guard case .payload(K.networkHeader, let offset, let length, _) = items[0] else { return nil }
        let selector: Selector
        if offset == Lowering.addressOffset(.saddr, family) { selector = .saddr }
        else if offset == Lowering.addressOffset(.daddr, family) { selector = .daddr }
        else { return nil }
        let addressLength = family.ipFamily.addressLength
        var prefix = Int(length) * 8
        var next = 1
        if next < items.count, case .bitwise(_, _, let mask, _) = items[next] {
            prefix = leadingOnes(mask)
            next += 1
        }
        guard next < items.count, case .cmp(_, let op, let data) = items[next], data.count == Int(length), Int(length) <= addressLength,
              let address = IPAddress(bytes: data + [UInt8](repeating: 0, count: addressLength - data.count)),
              let cidr = CIDR(address: address, prefixLength: prefix) else { return nil }
        return .address(selector, cidr, negated: op == K.cmpNeq)
    }

    static func verdict(code: Int32, chain: String?) -> Verdict? {
        switch code {
        case K.verdictAccept where chain == nil: .accept
        case K.verdictDrop where chain == nil: .drop
        case K.verdictReturn where chain == nil: .return
        case K.verdictJump: chain.flatMap(Name.init).map { .jump($0) }
        case K.verdictGoto: chain.flatMap(Name.init).map { .goto($0) }
        default: nil
        }
    }

    private static func u32(_ bytes: RegisterValue) -> UInt32? {
        guard bytes.count == 4 else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }

    private static func leadingOnes(_ mask: RegisterValue) -> Int {
        var count = 0
        for byte in mask {
            if byte == 0xff { count += 8; continue }
            count += byte.leadingZeroBitCount == 0 ? (~byte).leadingZeroBitCount : 0
            break
        }
        return count
    }

    /// Up to three expressions of a rule from `start`, indexed from 0, without copying them out.
    private struct Window {
        private let expressions: [Expression]
        private let start: Int
        let count: Int

        init(_ expressions: [Expression], from start: Int) {
            self.expressions = expressions
            self.start = start
            count = min(3, expressions.count - start)
        }

        var first: Expression? { count > 0 ? expressions[start] : nil }

        subscript(_ index: Int) -> Expression {
            precondition(index >= 0 && index < count, "expression window index out of range")
            return expressions[start + index]
        }
    }
}
