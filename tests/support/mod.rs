pub mod gitea_double;
