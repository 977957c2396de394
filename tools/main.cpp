// trellis CLI entry point (placeholder until subcommands land).
#include <cstdio>
int main() { std::puts("trellis"); return 0; }
