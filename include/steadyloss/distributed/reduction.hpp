#pragma once
// The Reducer concept and local_reducer live in stability/reducer.hpp (every Stabilizer needs
// them); this header stays for the multi-rank adapters (mpi.hpp, c10d.hpp) and existing includes.

#include "../stability/reducer.hpp"
