import NftIR
import ServiceModel

/// Expressions → statements: the inverse of `Lowering`, for exactly the shapes it emits.
///
/// Each candidate statement is read off the expressions, lowered again and compared with the
/// expressions it claims to cover, so anything that is not byte for byte what nftproxy writes
/// (a hand-edited rule, another tool's rule) is refused rather than guessed at.
enum Raising {
    static func rule(_ expressions: [Expression], family: Family) -> [Statement]? {
        var statements: [Statement] = []
        var index = 0
        while index < expressions.count {
            guard let statement = candidate(expressions[index...], family: family),
                  let lowered = try? Lowering.statement(statement, family: family),
                  index + lowered.count <= expressions.count,
                  Array(expressions[index..<(index + lowered.count)]) == lowered
            else { return nil }
            statements.append(statement)
            index += lowered.count
        }
        return statements
    }

    /// The statement whose lowering should start at `rest.first`, read from its distinctive parts.
    private static func candidate(_ rest: ArraySlice<Expression>, family: Family) -> Statement? {
        // Every fixed shape is told apart by its first three expressions.
        let items = Array(rest.prefix(3))
        guard let first = items.first else { return nil }
        switch first {
        case .payload, .meta(K.metaL4proto, _):
            if let lookup = concatenationLookup(rest.prefix(17), family: family) { return lookup }
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
        case .ct(K.ctState, _):
            return .ctStateNew
        case .ct(K.ctStatus, _):
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

    /// `sel . sel … @set` or `… vmap @map`: loads into consecutive slots, then a lookup from NFT_REG_1.
    private static func concatenationLookup(_ items: ArraySlice<Expression>, family: Family) -> Statement? {
        var selectors: [Selector] = []
        for item in items {
            switch item {
            case .payload(K.networkHeader, let offset, _, _):
                if offset == Lowering.addressOffset(.saddr, family) { selectors.append(.saddr) }
                else if offset == Lowering.addressOffset(.daddr, family) { selectors.append(.daddr) }
                else { return nil }
            case .payload(K.transportHeader, 2, 2, _):
                selectors.append(.thDport)
            case .meta(K.metaL4proto, _):
                selectors.append(.l4proto)
            case .lookup(_, let dreg, let set, _):
                guard let name = Name(set), !selectors.isEmpty else { return nil }
                return dreg == nil ? .lookup(selectors, set: name) : .vmap(selectors, map: name)
            default:
                return nil
            }
        }
        return nil
    }

    /// `ip saddr 10.0.0.0/8`, `ip6 daddr != ::1`: a load, maybe a mask, a comparison.
    private static func addressMatch(_ items: [Expression], family: Family) -> Statement? {
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

    private static func u32(_ bytes: [UInt8]) -> UInt32? {
        guard bytes.count == 4 else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }

    private static func leadingOnes(_ mask: [UInt8]) -> Int {
        var count = 0
        for byte in mask {
            if byte == 0xff { count += 8; continue }
            count += byte.leadingZeroBitCount == 0 ? (~byte).leadingZeroBitCount : 0
            break
        }
        return count
    }
}
