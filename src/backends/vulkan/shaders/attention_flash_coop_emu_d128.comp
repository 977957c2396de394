#version 450
// attention_flash_coop variant d128 with the cooperative-matrix operations emulated in plain GLSL
// (coop_emulation.glsl): a test module that runs the body on any device.
#extension GL_GOOGLE_include_directive : require
#define HEAD_DIM 128
#define COOP_EMULATION 1
#include "attention_flash_coop.glsl"
