import CNftables
import NftIR
