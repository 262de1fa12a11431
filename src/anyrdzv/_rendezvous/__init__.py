"""Layer 4: torchrun's elastic rendezvous: its pure rules, the shared watched view of a
run, batched writes, the node's claim of its name, the rendezvous and its report."""
